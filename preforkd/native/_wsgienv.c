/* preforkd.native._wsgienv: build_environ (preforkd/wsgi/environ.py) in one C call.
 *
 * Why: the environ of a keep-alive request is about 14k instructions of flat Python
 * (a dict copy, a loop over the fields, the target split, a dozen item assignments); in
 * C it is a few thousand. The Python function stays the reference and the judge of
 * everything unusual: bind() returns a builtin with build_environ's signature that
 * builds the environ itself when the arguments have their usual shape and otherwise
 * calls the Python function with the very same arguments (so it raises what it raises).
 * tests/native/ compares the two on hand-written and generated requests.
 *
 * Taken here (anything else is handed to the Python function, unchanged):
 *   - four positional arguments and template= a dict (not a subclass);
 *   - a Request and a ConnectionInfo (not subclasses) with request.headers a list of
 *     2-tuples of str (no subclasses), request.target and request.http_version str,
 *     conn.from_trusted_proxy a bool;
 *   - a percent-encoded path only when it is ASCII (unquote_to_bytes encodes anything
 *     else as UTF-8 first: left to Python);
 *   - template["SCRIPT_NAME"] a str.
 * The rare sub-steps call the same Python helpers the reference calls, with the same
 * arguments, so their rules live in one place: _environ_key for a field name not yet
 * in _key_cache, _split_target for a target that is not a plain origin-form,
 * _server_name_port for a Host not yet in _host_cache, _apply_proxy_headers when a
 * trusted proxy sent X-Forwarded-Proto or -For. Keys are set in the reference's order,
 * so the two environs compare equal item by item.
 */
#include "_common.h"

/* The helpers bind() keeps, in a tuple. */
enum {
    H_FALLBACK,        /* the reference build_environ */
    H_REQUEST_CLASS,   /* proto.events.Request */
    H_CONN_CLASS,      /* ConnectionInfo */
    H_KEY_CACHE,       /* dict: field name -> environ key or None (dropped) */
    H_ENVIRON_KEY,     /* _environ_key(name) */
    H_HOST_CACHE,      /* dict: Host -> (SERVER_NAME, SERVER_PORT or "") */
    H_SERVER_NAME_PORT,/* _server_name_port(host, default_port) */
    H_SPLIT_TARGET,    /* _split_target(target) -> (path, query, authority) */
    H_APPLY_PROXY,     /* _apply_proxy_headers(environ, proxy) */
    H_COUNT
};

/* Request's attributes are __slots__: bind() finds where each lives in the object and
 * build_environ reads them there, as their member descriptors would (for an instance of
 * exactly that class, which does not customise attribute access: checked). A
 * PyObject_GetAttr costs ~150 instructions each. ConnectionInfo is a named tuple: its
 * from_trusted_proxy is an item. */
enum { R_HEADERS, R_TARGET, R_METHOD, R_HTTP_VERSION, OFFSETS };
static const char *const slot_names[OFFSETS] = {"headers", "target", "method", "http_version"};

/* What bind() keeps: the builtin's self is a capsule of this. */
struct bound {
    PyObject *helpers;  /* tuple, H_* (first: see bound_free in _common.h) */
    Py_ssize_t offset[OFFSETS];
    Py_ssize_t trusted_index;  /* of from_trusted_proxy in ConnectionInfo */
};

/* Interned strings, made once at import (single-phase module, like _h1head). */
static PyObject *k_template, *k_http_cookie, *k_http_host, *k_xf_proto, *k_xf_for;
static PyObject *k_url_scheme, *k_server_name, *k_server_port, *k_script_name;
static PyObject *k_request_method, *k_path_info, *k_query_string, *k_raw_uri;
static PyObject *k_request_uri, *k_server_protocol, *k_wsgi_input;
static PyObject *v_https, *v_443, *v_80, *v_comma, *v_cookie_sep, *v_empty;
static PyObject *v_11, *v_10, *v_http_11, *v_http_10, *v_http_prefix;

static const struct {
    PyObject **slot;
    const char *text;
} interned[] = {
    {&k_template, "template"}, {&k_http_cookie, "HTTP_COOKIE"}, {&k_http_host, "HTTP_HOST"},
    {&k_xf_proto, "HTTP_X_FORWARDED_PROTO"}, {&k_xf_for, "HTTP_X_FORWARDED_FOR"},
    {&k_url_scheme, "wsgi.url_scheme"}, {&k_server_name, "SERVER_NAME"},
    {&k_server_port, "SERVER_PORT"}, {&k_script_name, "SCRIPT_NAME"},
    {&k_request_method, "REQUEST_METHOD"}, {&k_path_info, "PATH_INFO"},
    {&k_query_string, "QUERY_STRING"}, {&k_raw_uri, "RAW_URI"},
    {&k_request_uri, "REQUEST_URI"}, {&k_server_protocol, "SERVER_PROTOCOL"},
    {&k_wsgi_input, "wsgi.input"}, {&v_https, "https"}, {&v_443, "443"}, {&v_80, "80"},
    {&v_comma, ","}, {&v_cookie_sep, "; "}, {&v_empty, ""}, {&v_11, "1.1"}, {&v_10, "1.0"},
    {&v_http_11, "HTTP/1.1"}, {&v_http_10, "HTTP/1.0"}, {&v_http_prefix, "HTTP/"},
};

/* What one request brings (references taken by build_environ for the time of the call:
 * Python code it calls could replace the request's attributes). */
struct request_parts {
    PyObject *headers, *target, *method, *http_version;
    int trusted;
};

/* 1 when the request and connection have the usual shape, else 0: the reference
 * decides (and raises what it raises for an unset attribute). */
static int
read_parts(const struct bound *bd, PyObject *request, PyObject *conn, struct request_parts *r)
{
    PyObject *helpers = bd->helpers;
    if (Py_TYPE(request) != (PyTypeObject *)PyTuple_GET_ITEM(helpers, H_REQUEST_CLASS) ||
        Py_TYPE(conn) != (PyTypeObject *)PyTuple_GET_ITEM(helpers, H_CONN_CLASS) ||
        PyTuple_GET_SIZE(conn) <= bd->trusted_index)
        return 0;
    r->headers = SLOT(request, bd->offset[R_HEADERS]);
    r->target = SLOT(request, bd->offset[R_TARGET]);
    r->method = SLOT(request, bd->offset[R_METHOD]);
    r->http_version = SLOT(request, bd->offset[R_HTTP_VERSION]);
    PyObject *trusted = PyTuple_GET_ITEM(conn, bd->trusted_index);
    if (!PyBool_Check(trusted) || r->headers == NULL || !PyList_CheckExact(r->headers) ||
        r->target == NULL || !PyUnicode_CheckExact(r->target) || !STR_READY(r->target) ||
        r->method == NULL ||
        r->http_version == NULL || !PyUnicode_CheckExact(r->http_version))
        return 0;
    r->trusted = trusted == Py_True;
    return 1;
}

/* environ[key] = environ[key] + sep + value for a repeated field (RFC 9110 §5.3; cookies
 * with "; ", RFC 6265 §5.4), or environ[key] = value. */
static int
add_field(PyObject *environ, PyObject *key, PyObject *value)
{
    PyObject *old = PyDict_GetItemWithError(environ, key);
    if (old == NULL)
        return PyErr_Occurred() ? -1 : PyDict_SetItem(environ, key, value);
    Py_INCREF(old);
    int cookie = PyObject_RichCompareBool(key, k_http_cookie, Py_EQ);
    PyObject *joined = NULL;
    if (cookie >= 0) {
        PyObject *left = PyNumber_Add(old, cookie ? v_cookie_sep : v_comma);
        if (left != NULL) {
            joined = PyNumber_Add(left, value);
            Py_DECREF(left);
        }
    }
    Py_DECREF(old);
    if (joined == NULL)
        return -1;
    int rc = PyDict_SetItem(environ, key, joined);
    Py_DECREF(joined);
    return rc;
}

/* The field loop. 1 done, 0 for the reference (a field of another shape), -1 error. */
static int
add_fields(PyObject *helpers, PyObject *environ, PyObject *headers)
{
    PyObject *cache = PyTuple_GET_ITEM(helpers, H_KEY_CACHE);
    /* The size is read on every turn: _environ_key is Python and could change the list. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *item = PyList_GET_ITEM(headers, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2)
            return 0;
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        if (!PyUnicode_CheckExact(name) || !PyUnicode_CheckExact(value))
            return 0;
        Py_INCREF(item);  /* keeps name and value alive whatever happens to the list */
        PyObject *key = PyDict_GetItemWithError(cache, name);
        if (key != NULL && PyUnicode_CheckExact(key) && PyUnicode_GET_LENGTH(key) > 0) {
            Py_INCREF(key);
        } else if (PyErr_Occurred()) {
            Py_DECREF(item);
            return -1;
        } else {
            /* A miss, or a name the cache says to drop: the reference asks _environ_key. */
            key = PyObject_CallOneArg(PyTuple_GET_ITEM(helpers, H_ENVIRON_KEY), name);
            if (key == NULL) {
                Py_DECREF(item);
                return -1;
            }
        }
        int rc = key == Py_None ? 0 : add_field(environ, key, value);
        Py_DECREF(key);
        Py_DECREF(item);
        if (rc < 0)
            return -1;
    }
    return 1;
}

/* target -> *path, *query (new references). 1 done, 0 for the reference, -1 error. */
static int
split_target(PyObject *helpers, PyObject *environ, PyObject *target, PyObject **path,
             PyObject **query)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(target);
    Py_ssize_t fragment = len ? PyUnicode_FindChar(target, '#', 0, len, 1) : -1;
    if (fragment == -2)
        return -1;
    if (len && PyUnicode_READ_CHAR(target, 0) == '/' && fragment == -1) {
        /* origin-form (RFC 9112 §3.2.1), the common case */
        Py_ssize_t q = PyUnicode_FindChar(target, '?', 0, len, 1);
        if (q == -2)
            return -1;
        if (q == -1) {
            *path = Py_NewRef(target);
            *query = Py_NewRef(v_empty);
            return 1;
        }
        *path = PyUnicode_Substring(target, 0, q);
        *query = *path ? PyUnicode_Substring(target, q + 1, len) : NULL;
        return *query ? 1 : -1;
    }
    PyObject *parts = PyObject_CallOneArg(PyTuple_GET_ITEM(helpers, H_SPLIT_TARGET), target);
    if (parts == NULL)
        return -1;
    if (!PyTuple_CheckExact(parts) || PyTuple_GET_SIZE(parts) != 3 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(parts, 0))) {
        Py_DECREF(parts);
        return 0;
    }
    PyObject *authority = PyTuple_GET_ITEM(parts, 2);
    if (authority != Py_None && PyDict_SetItem(environ, k_http_host, authority) < 0) {
        Py_DECREF(parts);
        return -1;
    }
    *path = Py_NewRef(PyTuple_GET_ITEM(parts, 0));
    *query = Py_NewRef(PyTuple_GET_ITEM(parts, 1));
    Py_DECREF(parts);
    return 1;
}

/* The trusted proxy's X-Forwarded-* (only when one was sent: the reference does nothing
 * otherwise), then SERVER_NAME and SERVER_PORT from Host. 1, 0 or -1 as above. */
static int
apply_host(PyObject *helpers, PyObject *environ, PyObject *proxy, int trusted)
{
    if (trusted) {
        int sent = PyDict_Contains(environ, k_xf_proto);
        if (sent == 0)
            sent = PyDict_Contains(environ, k_xf_for);
        if (sent < 0)
            return -1;
        if (sent) {
            PyObject *done = PyObject_CallFunctionObjArgs(
                PyTuple_GET_ITEM(helpers, H_APPLY_PROXY), environ, proxy, NULL);
            if (done == NULL)
                return -1;
            Py_DECREF(done);
        }
    }
    PyObject *host = PyDict_GetItemWithError(environ, k_http_host);
    if (host == NULL)
        return PyErr_Occurred() ? -1 : 1;
    if (!PyUnicode_CheckExact(host))
        return 0;
    if (PyUnicode_GET_LENGTH(host) == 0)
        return 1;
    PyObject *scheme = PyDict_GetItemWithError(environ, k_url_scheme);
    if (scheme == NULL)
        return PyErr_Occurred() ? -1 : 0;  /* the reference raises the KeyError */
    int https = PyObject_RichCompareBool(scheme, v_https, Py_EQ);
    if (https < 0)
        return -1;
    PyObject *default_port = https ? v_443 : v_80;
    Py_INCREF(host);
    PyObject *known = PyDict_GetItemWithError(PyTuple_GET_ITEM(helpers, H_HOST_CACHE), host);
    PyObject *pair;
    if (known != NULL && PyTuple_CheckExact(known) && PyTuple_GET_SIZE(known) == 2 &&
        PyUnicode_CheckExact(PyTuple_GET_ITEM(known, 1))) {
        PyObject *port = PyTuple_GET_ITEM(known, 1);
        pair = PyUnicode_GET_LENGTH(port) ? Py_NewRef(known)
                                          : PyTuple_Pack(2, PyTuple_GET_ITEM(known, 0),
                                                         default_port);
    } else if (PyErr_Occurred()) {
        pair = NULL;
    } else {
        pair = PyObject_CallFunctionObjArgs(PyTuple_GET_ITEM(helpers, H_SERVER_NAME_PORT),
                                            host, default_port, NULL);
    }
    Py_DECREF(host);
    if (pair == NULL)
        return -1;
    int rc = 0;
    if (PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2) {
        rc = PyDict_SetItem(environ, k_server_name, PyTuple_GET_ITEM(pair, 0)) < 0 ||
                     PyDict_SetItem(environ, k_server_port, PyTuple_GET_ITEM(pair, 1)) < 0
                 ? -1
                 : 1;
    }
    Py_DECREF(pair);
    return rc;
}

static int
hex_value(Py_UCS1 c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* PATH_INFO: the percent-decoded path, its bytes as latin-1 (PEP 3333). As
 * urllib.parse.unquote_to_bytes, a "%" not followed by two hex digits stays as it is.
 * A new reference, or NULL with an exception set; *defer is set (and NULL returned
 * without an exception) for a non-ASCII path, which the reference decodes. */
static PyObject *
decode_path(PyObject *path, int *defer)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(path);
    Py_ssize_t percent = PyUnicode_FindChar(path, '%', 0, len, 1);
    if (percent == -2)
        return NULL;
    if (percent == -1)
        return Py_NewRef(path);
    if (!PyUnicode_IS_ASCII(path)) {  /* FindChar has made path ready */
        *defer = 1;
        return NULL;
    }
    const Py_UCS1 *in = PyUnicode_1BYTE_DATA(path);
    char small[512];
    char *out = len <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)len);
    if (out == NULL)
        return PyErr_NoMemory();
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        int high, low;
        if (in[i] == '%' && i + 2 < len &&
            (high = hex_value(in[i + 1])) >= 0 && (low = hex_value(in[i + 2])) >= 0) {
            out[n++] = (char)(high * 16 + low);
            i += 2;
        } else {
            out[n++] = (char)in[i];
        }
    }
    PyObject *decoded = PyUnicode_DecodeLatin1(out, n, NULL);
    if (out != small)
        PyMem_Free(out);
    return decoded;
}

/* PATH_INFO without the SCRIPT_NAME prefix it starts with (a whole segment only). */
static PyObject *
strip_script_name(PyObject *path_info, PyObject *script_name)
{
    Py_ssize_t plen = PyUnicode_GET_LENGTH(path_info);
    Py_ssize_t slen = PyUnicode_GET_LENGTH(script_name);
    if (slen == 0 || plen < slen)
        return Py_NewRef(path_info);
    Py_ssize_t match = PyUnicode_Tailmatch(path_info, script_name, 0, slen, -1);
    if (match < 0)
        return NULL;
    if (!match)
        return Py_NewRef(path_info);
    if (plen == slen)
        return Py_NewRef(v_empty);
    if (PyUnicode_READ_CHAR(path_info, slen) != '/')
        return Py_NewRef(path_info);
    return PyUnicode_Substring(path_info, slen, plen);
}

/* The keys every request sets last, in the reference's order. */
static int
set_request_keys(PyObject *environ, struct request_parts *r, PyObject *path_info,
                 PyObject *query, PyObject *wsgi_input)
{
    PyObject *protocol;
    if (r->http_version == v_11 || PyUnicode_Compare(r->http_version, v_11) == 0)
        protocol = Py_NewRef(v_http_11);
    else if (PyUnicode_Compare(r->http_version, v_10) == 0)
        protocol = Py_NewRef(v_http_10);
    else
        protocol = PyUnicode_Concat(v_http_prefix, r->http_version);
    if (protocol == NULL)
        return -1;
    int rc = (PyDict_SetItem(environ, k_request_method, r->method) < 0 ||
              PyDict_SetItem(environ, k_path_info, path_info) < 0 ||
              PyDict_SetItem(environ, k_query_string, query) < 0 ||
              PyDict_SetItem(environ, k_raw_uri, r->target) < 0 ||
              PyDict_SetItem(environ, k_request_uri, r->target) < 0 ||
              PyDict_SetItem(environ, k_server_protocol, protocol) < 0 ||
              PyDict_SetItem(environ, k_wsgi_input, wsgi_input) < 0)
                 ? -1
                 : 0;
    Py_DECREF(protocol);
    return rc;
}

/* The environ (new reference), NULL with an exception, or Py_NotImplemented (a new
 * reference) when the reference must build it. */
static PyObject *
build(PyObject *helpers, PyObject *environ, struct request_parts *r, PyObject *proxy,
      PyObject *wsgi_input)
{
    PyObject *path = NULL, *query = NULL, *path_info = NULL, *stripped = NULL;
    int rc = add_fields(helpers, environ, r->headers);
    if (rc > 0)
        rc = split_target(helpers, environ, r->target, &path, &query);
    if (rc > 0)
        rc = apply_host(helpers, environ, proxy, r->trusted);
    if (rc > 0) {
        int defer = 0;
        path_info = decode_path(path, &defer);
        rc = path_info ? 1 : defer ? 0 : -1;
    }
    if (rc > 0) {
        PyObject *script_name = PyDict_GetItemWithError(environ, k_script_name);
        if (script_name == NULL || !PyUnicode_CheckExact(script_name))
            rc = PyErr_Occurred() ? -1 : 0;
        else
            rc = (stripped = strip_script_name(path_info, script_name)) ? 1 : -1;
    }
    if (rc > 0)
        rc = set_request_keys(environ, r, stripped, query, wsgi_input) < 0 ? -1 : 1;
    Py_XDECREF(path);
    Py_XDECREF(query);
    Py_XDECREF(path_info);
    Py_XDECREF(stripped);
    if (rc < 0)
        return NULL;
    return rc ? Py_NewRef(environ) : Py_NewRef(Py_NotImplemented);
}

static const char capsule_name[] = "preforkd.native._wsgienv.bound";

/* build_environ(request, conn, wsgi_input, proxy, *, template=...) */
static PyObject *
build_environ(PyObject *capsule, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    const struct bound *bd = PyCapsule_GetPointer(capsule, capsule_name);
    if (bd == NULL)
        return NULL;
    PyObject *fallback = PyTuple_GET_ITEM(bd->helpers, H_FALLBACK);
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames == NULL || PyTuple_GET_SIZE(kwnames) != 1)
        return PyObject_Vectorcall(fallback, args, nargsf, kwnames);
    PyObject *kw = PyTuple_GET_ITEM(kwnames, 0);
    PyObject *template = args[4];
    struct request_parts r;
    if ((kw != k_template && PyUnicode_Compare(kw, k_template) != 0) ||
        !PyDict_CheckExact(template) || !read_parts(bd, args[0], args[1], &r)) {
        if (PyErr_Occurred())
            return NULL;
        return PyObject_Vectorcall(fallback, args, nargsf, kwnames);
    }
    Py_INCREF(r.headers);
    Py_INCREF(r.target);
    Py_INCREF(r.method);
    Py_INCREF(r.http_version);
    PyObject *environ = PyDict_Copy(template);
    PyObject *result = environ ? build(bd->helpers, environ, &r, args[3], args[2]) : NULL;
    Py_XDECREF(environ);
    Py_DECREF(r.headers);
    Py_DECREF(r.target);
    Py_DECREF(r.method);
    Py_DECREF(r.http_version);
    if (result == Py_NotImplemented) {
        Py_DECREF(result);
        return PyObject_Vectorcall(fallback, args, nargsf, kwnames);
    }
    return result;
}

static PyMethodDef build_environ_def = {
    "build_environ", (PyCFunction)(void (*)(void))build_environ,
    METH_FASTCALL | METH_KEYWORDS,
    "build_environ(request, conn, wsgi_input, proxy, *, template=...) -> dict\n\n"
    "The WSGI environ of one request; the reference build_environ decides the rest.",
};

/* The index of from_trusted_proxy in the named tuple class conn_cls, or -1. */
static Py_ssize_t
trusted_index(PyObject *conn_cls)
{
    if (!PyType_IsSubtype((PyTypeObject *)conn_cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "bind(): the connection class must be a tuple");
        return -1;
    }
    PyObject *fields = PyObject_GetAttrString(conn_cls, "_fields");
    if (fields == NULL)
        return -1;
    Py_ssize_t index = -1;
    if (PyTuple_Check(fields)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields); i++) {
            PyObject *field = PyTuple_GET_ITEM(fields, i);
            if (PyUnicode_Check(field) &&
                PyUnicode_CompareWithASCIIString(field, "from_trusted_proxy") == 0)
                index = i;
        }
    }
    Py_DECREF(fields);
    if (index < 0)
        PyErr_SetString(PyExc_TypeError, "bind(): no from_trusted_proxy field");
    return index;
}

static PyObject *
bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != H_COUNT) {
        PyErr_Format(PyExc_TypeError, "bind() takes %d arguments", (int)H_COUNT);
        return NULL;
    }
    if (!PyType_Check(args[H_REQUEST_CLASS]) || !PyType_Check(args[H_CONN_CLASS]) ||
        !PyDict_CheckExact(args[H_KEY_CACHE]) || !PyDict_CheckExact(args[H_HOST_CACHE])) {
        PyErr_SetString(PyExc_TypeError, "bind(): two classes and two dicts expected");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        if (i > H_CONN_CLASS && i != H_KEY_CACHE && i != H_HOST_CACHE &&
            !PyCallable_Check(args[i])) {
            PyErr_Format(PyExc_TypeError, "bind(): argument %zd must be callable", i + 1);
            return NULL;
        }
    }
    struct bound *bd = PyMem_Calloc(1, sizeof(*bd));
    if (bd == NULL)
        return PyErr_NoMemory();
    for (int i = 0; i < OFFSETS; i++) {
        if ((bd->offset[i] = slot_offset(args[H_REQUEST_CLASS], slot_names[i], 0)) < 0) {
            PyMem_Free(bd);
            return NULL;
        }
    }
    if ((bd->trusted_index = trusted_index(args[H_CONN_CLASS])) < 0) {
        PyMem_Free(bd);
        return NULL;
    }
    return bind_builtin(&build_environ_def, module, capsule_name, bd, args, nargs);
}

static PyMethodDef wsgienv_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(build_environ, request_cls, conn_cls, key_cache, environ_key, host_cache,\n"
     "     server_name_port, split_target, apply_proxy_headers) -> build_environ\n\n"
     "A C build_environ that hands every case it does not take to the first argument."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef wsgienv_module = {
    PyModuleDef_HEAD_INIT, "_wsgienv", "The WSGI environ of a request, in C.", -1,
    wsgienv_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__wsgienv(void)
{
    for (size_t i = 0; i < sizeof(interned) / sizeof(interned[0]); i++) {
        if (*interned[i].slot == NULL &&
            (*interned[i].slot = PyUnicode_InternFromString(interned[i].text)) == NULL)
            return NULL;
    }
    return PyModule_Create(&wsgienv_module);
}
