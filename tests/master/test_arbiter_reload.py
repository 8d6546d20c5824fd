"""HUP: a new generation of workers with the re-read configuration; the old one is
retired only once the new one is ready, and stays if the new one fails to boot."""

from __future__ import annotations

import signal

from preforkd import errors
from preforkd.master.arbiter import Phase
from preforkd.master.signals import Command


def test_hup_starts_a_new_generation_and_retires_the_old_once_ready(make_reloadable, caplog):
    master = make_reloadable("workers = 2\n")
    old = master.boot()
    master.signal(signal.SIGHUP)
    master.step()

    # Worker 1 of generation 2 boots alone; the old workers are untouched.
    new = [p for p in master.os.pids() if p not in old]
    assert len(new) == 1 and master.generation_of(new[0]) == 2
    assert all(master.os.children[p].signals == [] for p in old)

    master.os.report_ready(new[0])
    master.step()
    new = [p for p in master.os.pids() if p not in old]
    assert len(new) == 2  # then the rest of generation 2
    assert all(master.os.children[p].signals == [] for p in old)

    master.os.report_ready(new[1])
    master.step()
    # All of generation 2 ready: generation 1 is asked to finish its requests and go.
    assert all(master.os.children[p].signals == [signal.SIGTERM] for p in old)
    assert all(master.os.children[p].signals == [] for p in new)
    assert "generation 2 is ready (2 worker(s)); retiring the older generation" in (caplog.messages)
    for pid in old:
        master.os.exit(pid, 0)
    master.step()
    assert master.os.pids() == new
    assert [c.slot for c in master.os.alive()] == [1, 2]


def test_hup_rereads_the_config_file(make_reloadable, caplog):
    master = make_reloadable("workers = 1\n")
    master.boot()
    master.config_path.write_text("workers = 3\ntimeout = 7\n")
    master.signal(signal.SIGHUP)
    master.step()
    master.ready_all()
    master.ready_all()
    assert master.arbiter.cfg.workers == 3 and master.arbiter.cfg.timeout == 7
    new = [c for c in master.os.alive() if master.generation_of(c.pid) == 2]
    assert len(new) == 3
    assert all(c.spec.cfg.timeout == 7 for c in new)  # the new workers got the new config
    assert any("new configuration: --workers '1' -> '3'" in m for m in caplog.messages)


def test_settings_fixed_at_start_are_reported_and_kept(make_reloadable, caplog):
    master = make_reloadable('workers = 1\nbinds = ["127.0.0.1:8001"]\n')
    master.boot()
    master.config_path.write_text('workers = 1\nbinds = ["127.0.0.1:9999"]\nbacklog = 10\n')
    master.signal(signal.SIGHUP)
    master.step()
    assert master.arbiter.cfg.binds == ("127.0.0.1:8001",)
    assert master.arbiter.cfg.backlog == 2048
    text = "\n".join(caplog.messages)
    assert (
        "HUP: --bind cannot change on reload (the listening sockets are bound once): keeping "
        "'127.0.0.1:8001', ignoring '127.0.0.1:9999'; restart, or upgrade with USR2, to "
        "apply it"
    ) in text
    assert "--backlog cannot change on reload" in text
    assert master.generation_of(master.os.pids()[-1]) == 2  # the reload itself goes on


def test_config_errors_keep_the_current_configuration_and_workers(make_reloadable, caplog):
    master = make_reloadable("workers = 2\n")
    pids = master.boot()
    master.config_path.write_text("workers = 'many'\nwrokers = 3\n")
    master.signal(signal.SIGHUP)
    master.step()
    assert master.os.pids() == pids
    assert all(master.os.children[p].signals == [] for p in pids)
    message = next(m for m in caplog.messages if m.startswith("HUP: the configuration has"))
    assert "workers: " in message and "unknown setting 'wrokers'" in message
    assert "keeping the current one" in message


def test_new_generation_failing_to_load_is_abandoned_old_keeps_serving(make_reloadable, caplog):
    master = make_reloadable("workers = 2\n")
    old = master.boot()
    master.config_path.write_text("workers = 4\n")
    master.signal(signal.SIGHUP)
    master.step()
    (new,) = [p for p in master.os.pids() if p not in old]
    master.os.exit(new, errors.WORKER_EXIT_APP_LOAD_ERROR)
    assert master.step() is None  # the master carries on

    assert master.os.pids() == old
    assert all(master.os.children[p].signals == [] for p in old)
    assert master.arbiter.generation == 1 and master.arbiter.cfg.workers == 2
    assert master.arbiter.target == 2
    assert (
        f"generation 2 failed to boot: worker 1 (pid {new}): the application failed to load "
        "(see its traceback above); generation 1 keeps serving. Fix the error and reload "
        "again (HUP)."
    ) in caplog.messages
    # The next HUP tries again, as generation 3.
    master.signal(signal.SIGHUP)
    master.step()
    master.ready_all()
    master.ready_all()
    assert {master.generation_of(c.pid) for c in master.os.alive()} >= {3}
    assert all(master.os.children[p].signals == [signal.SIGTERM] for p in old)


def test_any_boot_failure_before_takeover_abandons_the_generation(make_reloadable):
    master = make_reloadable("workers = 2\n")
    old = master.boot()
    master.signal(signal.SIGHUP)
    master.step()
    (first,) = [p for p in master.os.pids() if p not in old]
    master.os.report_ready(first)
    master.step()
    (second,) = [p for p in master.os.pids() if p not in (*old, first)]
    master.os.crash(second, signal.SIGSEGV)  # worker 2 of generation 2 dies booting
    master.step()
    assert master.os.children[first].signals == [signal.SIGTERM]  # retired with its gen
    assert all(master.os.children[p].signals == [] for p in old)
    assert master.arbiter.generation == 1


def test_old_worker_dying_after_abandon_is_replaced_with_the_old_config(make_reloadable):
    master = make_reloadable("workers = 2\ntimeout = 11\n")
    old = master.boot()
    master.config_path.write_text("workers = 2\ntimeout = 22\n")
    master.signal(signal.SIGHUP)
    master.step()
    (new,) = [p for p in master.os.pids() if p not in old]
    master.os.exit(new, errors.WORKER_EXIT_APP_LOAD_ERROR)
    master.step()
    master.os.exit(old[0], 1)
    master.step()
    (replacement,) = [p for p in master.os.pids() if p not in old]
    assert master.generation_of(replacement) == 1
    assert master.os.children[replacement].spec.cfg.timeout == 11


def test_hup_during_a_reload_supersedes_the_booting_generation(make_reloadable, caplog):
    master = make_reloadable("workers = 1\n")
    (old,) = master.boot()
    master.signal(signal.SIGHUP)
    master.step()
    (booting,) = [p for p in master.os.pids() if p != old]
    master.signal(signal.SIGHUP)
    master.step()
    assert master.os.children[booting].signals == [signal.SIGTERM]
    assert master.os.children[old].signals == []
    (newest,) = [p for p in master.os.pids() if p not in (old, booting)]
    assert master.generation_of(newest) == 3
    master.os.exit(booting, errors.WORKER_EXIT_APP_LOAD_ERROR)  # retired: no abandon
    master.step()
    assert master.arbiter.generation == 3
    master.os.report_ready(newest)
    master.step()
    assert master.os.children[old].signals == [signal.SIGTERM]
    assert "generation 3 is ready (1 worker(s)); retiring the older generation" in (caplog.messages)


def test_several_hups_in_one_turn_make_one_reload(make_reloadable):
    master = make_reloadable("workers = 1\n")
    master.boot()
    for _ in range(3):
        master.signal(signal.SIGHUP)
    master.step()
    assert master.arbiter.generation == 2
    assert master.os.forks() == 2


def test_hup_during_the_first_boot_restarts_it(make_reloadable):
    master = make_reloadable("workers = 2\n")
    master.arbiter.start()
    (first,) = master.os.pids()
    master.signal(signal.SIGHUP)
    master.step()
    assert master.os.children[first].signals == [signal.SIGTERM]
    master.os.exit(first, 0)
    master.step()
    (second,) = master.os.pids()
    master.os.report_ready(second)
    master.step()
    assert len(master.os.pids()) == 2
    assert master.arbiter.phase is Phase.RUNNING


def test_failure_of_a_reload_during_the_first_boot_stops_the_master(make_reloadable):
    # Nothing to fall back on: as at start, a broken application stops the master.
    master = make_reloadable("workers = 2\n")
    master.arbiter.start()
    master.signal(signal.SIGHUP)
    master.step()
    master.os.exit(master.os.pids()[0], 0)
    master.step()
    master.os.exit(master.os.pids()[0], errors.WORKER_EXIT_APP_LOAD_ERROR)
    assert master.run_until_done() == errors.EXIT_APP_LOAD_ERROR


def test_preloaded_app_only_for_the_first_generation(make_reloadable):
    # With --preload the master's copy of the app is as old as the master: a reload's
    # workers load the application themselves (the process layer first forgets the
    # modules the preload imported).
    app = object()
    master = make_reloadable("workers = 1\npreload = true\n", app=app)
    (first,) = master.boot()
    assert master.os.children[first].spec.app is app
    master.signal(signal.SIGHUP)
    master.step()
    (second,) = [p for p in master.os.pids() if p != first]
    assert master.os.children[second].spec.app is None


def test_watcher_change_triggers_a_reload(make_reloadable, caplog):
    master = make_reloadable("workers = 1\n")
    master.boot()
    master.arbiter.commands.put(Command("changed", detail="app.py"))
    master.step()
    assert "reload: changed: app.py" in caplog.messages
    assert "reload: starting generation 2 (replacing 1)" in caplog.messages


def test_ttin_during_reload_applies_to_the_new_generation(make_reloadable):
    master = make_reloadable("workers = 1\n")
    (old,) = master.boot()
    master.signal(signal.SIGHUP)
    master.signal(signal.SIGTTIN)
    master.step()
    master.ready_all()
    master.ready_all()
    assert master.os.children[old].signals == [signal.SIGTERM]
    assert len([c for c in master.os.alive() if master.generation_of(c.pid) == 2]) == 2
