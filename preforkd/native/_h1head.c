/* preforkd.native._h1head: one call for a complete, plain HTTP/1.1 request head.
 *
 * Why: llhttp (through httptools) calls back into Python for the target, for every field
 * and for the end of the head, and the H1 core then asks the parser for the method, the
 * version and the keep-alive flags: about a quarter of a keep-alive request's CPU. Most
 * requests a server sees are small GETs whose head arrives in one read; this module
 * parses those in one pass and returns everything the core needs at once.
 *
 * The rule that keeps it safe: it TAKES ONLY A SUBSET of what llhttp accepts, and answers
 * None for everything else, so the caller hands those bytes to llhttp, which stays the
 * judge of every unusual, incomplete or malformed head. Taken heads must give exactly the
 * result llhttp and the Python callbacks would (tests/native/test_h1head.py compares the
 * two paths on generated requests). Taken means all of:
 *
 *   - the method is GET, HEAD, POST, PUT, DELETE, OPTIONS or PATCH, then one SP;
 *   - an origin-form target: "/" then bytes 0x21-0x7E except "#" (RFC 9112 §3.2.1; llhttp
 *     accepts exactly 0x21-0x7E in a target; a fragment is ours to refuse), then one SP;
 *   - "HTTP/1.1" or "HTTP/1.0", then CRLF;
 *   - fields as RFC 9110 §5.1 and RFC 9112 §5 write them: a token name directly followed
 *     by ":", optional whitespace, a value of field-vchar / SP / HTAB (0x80-0xFF as
 *     obs-text), CRLF; no obs-fold, no bare LF or CR anywhere;
 *   - none of the fields that change the protocol or ask for an answer first
 *     (Transfer-Encoding, Upgrade, Expect, Proxy-Connection); Content-Length at most once
 *     and only as 1 to 18 digits (RFC 9110 §8.6); Connection, if present, only as
 *     exactly "close" or "keep-alive" (any case);
 *   - within the limits the caller passes (request line, field size, field count), so
 *     that llhttp's path raises the 414 and 431 answers with their messages;
 *   - a blank line ends the head within the buffer.
 *
 * parse_head(data, start, max_line, max_field, max_fields) returns None or the tuple
 * (method, target, version, headers, host_count, host, keep_alive, content_length, end):
 * headers a list of (lower-case name, value without surrounding whitespace) str pairs,
 * host the last Host value or None, content_length an int or None, end the offset just
 * after the head (the body, if any, is the caller's to frame). Host's validity and the limits
 * the callbacks also enforce later are the caller's to check.
 */
#include "_common.h"

/* RFC 9110 §5.6.2: tchar. */
static unsigned char is_tchar[256];
/* RFC 9112 §3.2.1 origin-form as llhttp takes it: 0x21-0x7E, without "#". */
static unsigned char is_target[256];
/* RFC 9110 §5.5: field-vchar / SP / HTAB, obs-text included (llhttp takes 0x80-0xFF). */
static unsigned char is_value[256];

static PyObject *methods[7];
static const char *const method_names[7] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
static PyObject *version_11, *version_10;

static void
init_tables(void)
{
    init_tchar(is_tchar);
    for (int c = 0; c < 256; c++) {
        is_target[c] = (c >= 0x21 && c <= 0x7E && c != '#');
        is_value[c] = (c == '\t' || (c >= 0x20 && c != 0x7F));
    }
}

/* The index in method_names of the method at p (followed by SP), or -1. */
static int
match_method(const char *p, Py_ssize_t avail, Py_ssize_t *len)
{
    for (int i = 0; i < 7; i++) {
        Py_ssize_t n = (Py_ssize_t)strlen(method_names[i]);
        if (avail > n && p[n] == ' ' && memcmp(p, method_names[i], (size_t)n) == 0) {
            *len = n;
            return i;
        }
    }
    return -1;
}

static int
name_is(const char *name, Py_ssize_t len, const char *lower)
{
    if ((Py_ssize_t)strlen(lower) != len)
        return 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        char c = name[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c != lower[i])
            return 0;
    }
    return 1;
}

/* A str of the bytes at p: ASCII is copied straight in, obs-text decoded as latin-1. */
static PyObject *
text(const char *p, Py_ssize_t len, int lower)
{
    int ascii = 1;
    for (Py_ssize_t i = 0; i < len; i++) {
        if ((unsigned char)p[i] >= 0x80) {
            ascii = 0;
            break;
        }
    }
    if (!ascii)
        return PyUnicode_DecodeLatin1(p, len, NULL);  /* values only: names are tokens */
    PyObject *s = PyUnicode_New(len, 127);
    if (s == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
    if (lower) {
        for (Py_ssize_t i = 0; i < len; i++) {
            char c = p[i];
            out[i] = (Py_UCS1)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        }
    } else {
        memcpy(out, p, (size_t)len);
    }
    return s;
}

enum { CONN_CLOSE = 1, CONN_KEEP_ALIVE = 2 };

/* What parse_fields found besides the header list. */
struct head_info {
    Py_ssize_t host_count;
    PyObject *host;  /* borrowed from the list */
    int connection;  /* CONN_* bits */
    long long content_length;  /* -1: none */
};

/* Parses the fields from p up to and including the blank line. Returns the offset after
 * it, 0 when the head is not ours to take, -1 with an exception set. */
static Py_ssize_t
parse_fields(const char *buf, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t max_field,
             Py_ssize_t max_fields, PyObject *headers, struct head_info *info)
{
    for (;;) {
        if (pos + 1 >= end)
            return 0;  /* incomplete: llhttp buffers it */
        if (buf[pos] == '\r')
            return buf[pos + 1] == '\n' ? pos + 2 : 0;
        Py_ssize_t name_start = pos;
        while (pos < end && is_tchar[(unsigned char)buf[pos]])
            pos++;
        Py_ssize_t name_len = pos - name_start;
        if (pos >= end || name_len == 0 || buf[pos] != ':')
            return 0;  /* incomplete, obs-fold, or not a field line */
        pos++;
        while (pos < end && (buf[pos] == ' ' || buf[pos] == '\t'))
            pos++;
        Py_ssize_t value_start = pos;
        while (pos < end && is_value[(unsigned char)buf[pos]])
            pos++;
        if (pos + 1 >= end || buf[pos] != '\r' || buf[pos + 1] != '\n')
            return 0;  /* incomplete, or a CTL (CR, LF, NUL...) in the value */
        Py_ssize_t value_end = pos;
        pos += 2;
        /* The callbacks measure the value as llhttp gives it: leading OWS stripped only. */
        if (name_len + (value_end - value_start) > max_field)
            return 0;
        while (value_end > value_start &&
               (buf[value_end - 1] == ' ' || buf[value_end - 1] == '\t'))
            value_end--;
        const char *name = buf + name_start;
        const char *value = buf + value_start;
        Py_ssize_t value_len = value_end - value_start;
        switch (name_len) {  /* the fields that change how the request is read */
        case 6:
            if (name_is(name, name_len, "expect"))
                return 0;
            break;
        case 7:
            if (name_is(name, name_len, "upgrade"))
                return 0;
            break;
        case 10:
            if (name_is(name, name_len, "connection")) {
                if (name_is(value, value_len, "close"))
                    info->connection |= CONN_CLOSE;
                else if (name_is(value, value_len, "keep-alive"))
                    info->connection |= CONN_KEEP_ALIVE;
                else
                    return 0;  /* tokens, "upgrade": llhttp's flags decide */
            }
            break;
        case 14:
            if (name_is(name, name_len, "content-length")) {
                /* Once, digits only: llhttp refuses a second one (even equal), and a sign,
                 * a list or inner whitespace are for it to judge. 18 digits cannot
                 * overflow. */
                if (info->content_length >= 0 || value_len < 1 || value_len > 18)
                    return 0;
                long long length = 0;
                for (Py_ssize_t i = 0; i < value_len; i++) {
                    if (value[i] < '0' || value[i] > '9')
                        return 0;
                    length = length * 10 + (value[i] - '0');
                }
                info->content_length = length;
            }
            break;
        case 16:
            if (name_is(name, name_len, "proxy-connection"))
                return 0;  /* llhttp reads it as Connection */
            break;
        case 17:
            if (name_is(name, name_len, "transfer-encoding"))
                return 0;
            break;
        }
        if (PyList_GET_SIZE(headers) >= max_fields)
            return 0;
        PyObject *key = text(name, name_len, 1);
        if (key == NULL)
            return -1;
        PyObject *val = text(value, value_len, 0);
        if (val == NULL) {
            Py_DECREF(key);
            return -1;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(key);
            Py_DECREF(val);
            return -1;
        }
        PyTuple_SET_ITEM(pair, 0, key);
        PyTuple_SET_ITEM(pair, 1, val);
        int failed = PyList_Append(headers, pair);
        Py_DECREF(pair);
        if (failed)
            return -1;
        if (name_len == 4 && name_is(name, name_len, "host")) {
            info->host_count++;
            info->host = val;
        }
    }
}

static PyObject *
parse_head(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_head(data, start, max_line, max_field, max_fields)");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "data must be bytes");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_line = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_field = PyLong_AsSsize_t(args[3]);
    Py_ssize_t max_fields = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred())
        return NULL;
    const char *buf = PyBytes_AS_STRING(args[0]);
    Py_ssize_t end = PyBytes_GET_SIZE(args[0]);
    if (start < 0 || start >= end)
        Py_RETURN_NONE;

    /* Request line (RFC 9112 §3): method SP origin-form SP HTTP-version CRLF. */
    Py_ssize_t method_len;
    int method = match_method(buf + start, end - start, &method_len);
    if (method < 0)
        Py_RETURN_NONE;
    Py_ssize_t pos = start + method_len + 1;
    Py_ssize_t target_start = pos;
    if (pos >= end || buf[pos] != '/')
        Py_RETURN_NONE;
    while (pos < end && is_target[(unsigned char)buf[pos]])
        pos++;
    Py_ssize_t target_len = pos - target_start;
    if (method_len + target_len + 10 > max_line)
        Py_RETURN_NONE;  /* llhttp's path answers 414 */
    if (end - pos < 11 || memcmp(buf + pos, " HTTP/1.", 8) != 0 ||
        (buf[pos + 8] != '1' && buf[pos + 8] != '0') || buf[pos + 9] != '\r' ||
        buf[pos + 10] != '\n')
        Py_RETURN_NONE;
    int http11 = buf[pos + 8] == '1';
    pos += 11;

    PyObject *headers = PyList_New(0);
    if (headers == NULL)
        return NULL;
    struct head_info info = {0, NULL, 0, -1};
    Py_ssize_t head_end = parse_fields(buf, pos, end, max_field, max_fields, headers, &info);
    if (head_end <= 0) {
        Py_DECREF(headers);
        if (head_end < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (info.connection == (CONN_CLOSE | CONN_KEEP_ALIVE)) {
        Py_DECREF(headers);
        Py_RETURN_NONE;  /* both: llhttp's rules per version decide */
    }
    /* RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive". */
    int keep_alive = http11 ? !(info.connection & CONN_CLOSE)
                            : (info.connection & CONN_KEEP_ALIVE) != 0;
    PyObject *target = text(buf + target_start, target_len, 0);
    if (target == NULL) {
        Py_DECREF(headers);
        return NULL;
    }
    PyObject *length = Py_None;
    Py_INCREF(length);
    if (info.content_length >= 0) {
        Py_DECREF(length);
        length = PyLong_FromLongLong(info.content_length);
        if (length == NULL) {
            Py_DECREF(target);
            Py_DECREF(headers);
            return NULL;
        }
    }
    PyObject *result = Py_BuildValue(
        "(OOOOnOOOn)", methods[method], target, http11 ? version_11 : version_10, headers,
        info.host_count, info.host ? info.host : Py_None, keep_alive ? Py_True : Py_False,
        length, head_end);
    Py_DECREF(length);
    Py_DECREF(target);
    Py_DECREF(headers);
    return result;
}

static PyMethodDef h1head_methods[] = {
    {"parse_head", (PyCFunction)(void (*)(void))parse_head, METH_FASTCALL,
     "parse_head(data, start, max_line, max_field, max_fields) -> tuple | None\n\n"
     "A complete, plain request head at data[start:] in one call, or None for llhttp."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef h1head_module = {
    PyModuleDef_HEAD_INIT, "_h1head", "A fast path for plain HTTP/1.1 request heads.", -1,
    h1head_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__h1head(void)
{
    init_tables();
    for (int i = 0; i < 7; i++) {
        if (methods[i] == NULL && (methods[i] = PyUnicode_InternFromString(method_names[i])) == NULL)
            return NULL;
    }
    if (version_11 == NULL && (version_11 = PyUnicode_InternFromString("1.1")) == NULL)
        return NULL;
    if (version_10 == NULL && (version_10 = PyUnicode_InternFromString("1.0")) == NULL)
        return NULL;
    return PyModule_Create(&h1head_module);
}
