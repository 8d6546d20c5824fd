/* preforkd.native._h1frame: ResponseFramer.head (preforkd/proto/h1_response.py) in C.
 *
 * Why: the status line and header section of a small response cost about 10k
 * instructions of Python per request (a loop over the app's fields with memo lookups,
 * the framing choice, a list of lines and a join); in C they are one pass over the
 * fields into one buffer.
 *
 * The rule that keeps it safe: this module only ever SUCCEEDS. When a response is not
 * plainly valid, or has a shape it does not take, it calls the Python head() with the
 * same arguments, which stays the reference and the judge of every error (the same
 * LocalProtocolError, status 500, with the same message). Taken here:
 *   - a str status (no subclass) matching RFC 9112 §4's status-code [SP reason-phrase];
 *   - a list of 2-tuples of str; names tokens (RFC 9110 §5.6.2), values free of CTLs but
 *     HTAB (RFC 9110 §5.5) and within latin-1;
 *   - Content-Length, Transfer-Encoding and Connection values in ASCII (the reference
 *     strips and lower-cases them with Unicode's rules), Content-Length of 1 to 18 digits
 *     and equal when repeated, Transfer-Encoding exactly "chunked";
 *   - a ResponseFramer (not a subclass) before its head, whose request has str method
 *     and version and a bool keep_alive, and bytes date and Server line.
 * It then writes what the reference writes, byte for byte, and sets the same attributes
 * (tests/native/ compares the two on hand-written and generated responses).
 */
#include "_common.h"

enum { H_FALLBACK, H_CLASS, H_REQUEST_CLASS, H_NONE, H_LENGTH, H_CHUNKED, H_CLOSE, H_COUNT };

/* The framer's and its request's attributes are __slots__: bind_head() finds where each
 * lives in the object, and head() reads and writes them there, as their member
 * descriptors would (an instance of exactly the class bound, whose type does not
 * override attribute access: checked). A PyObject_GetAttr each cost ~150 instructions,
 * a third of what this module saves. */
enum {
    S_STAGE, S_REQUEST, S_DATE, S_SERVER, S_STATUS_CODE, S_KEEP_ALIVE, S_FRAMING,
    S_REMAINING, R_METHOD, R_HTTP_VERSION, R_KEEP_ALIVE, OFFSETS
};
static const char *const slot_names[OFFSETS] = {
    "_stage", "_request", "_date", "_server", "status_code", "keep_alive", "_framing",
    "_remaining", "method", "http_version", "keep_alive",
};

/* What bind_head() keeps: the builtin's self is a capsule of this. */
struct bound {
    PyObject *helpers;  /* tuple, H_* (first: see bound_free in _common.h) */
    Py_ssize_t offset[OFFSETS];
};

/* RFC 9110 §5.6.2 tchar. */
static unsigned char is_tchar[256];
/* RFC 9110 §5.5: no CTL but HTAB in a field value (obs-text allowed); RFC 9112 §4 allows
 * the same bytes in a reason-phrase. */
static unsigned char is_text[256];

static void
init_tables(void)
{
    init_tchar(is_tchar);
    for (int c = 0; c < 256; c++)
        is_text[c] = (c == '\t' || (c >= 0x20 && c != 0x7F));
}

/* The head being written: on the stack while small, on the heap past that. */
struct buf {
    char *data;
    Py_ssize_t len, cap;
    char small[1024];
};

static int
buf_add(struct buf *b, const void *p, Py_ssize_t n)
{
    if (n > b->cap - b->len) {
        if (n > PY_SSIZE_T_MAX / 4 - b->len) {
            PyErr_NoMemory();
            return -1;
        }
        Py_ssize_t cap = 2 * (b->len + n);
        char *data = b->data == b->small ? PyMem_Malloc((size_t)cap)
                                         : PyMem_Realloc(b->data, (size_t)cap);
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (b->data == b->small)
            memcpy(data, b->small, (size_t)b->len);
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, (size_t)n);
    b->len += n;
    return 0;
}

static int
buf_str(struct buf *b, const char *text)
{
    return buf_add(b, text, (Py_ssize_t)strlen(text));
}

static int
buf_int(struct buf *b, long long value)
{
    char digits[24];
    int n = 0;
    do {
        digits[sizeof(digits) - 1 - n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value && n < (int)sizeof(digits));
    return buf_add(b, digits + sizeof(digits) - n, n);
}

/* name (ASCII) equals lower (lower-case ASCII), ignoring case. */
static int
lower_eq(const Py_UCS1 *name, Py_ssize_t len, const char *lower)
{
    if ((Py_ssize_t)strlen(lower) != len)
        return 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        Py_UCS1 c = name[i];
        if (c >= 'A' && c <= 'Z')
            c = (Py_UCS1)(c + 32);
        if (c != (Py_UCS1)lower[i])
            return 0;
    }
    return 1;
}

/* [start, end) of value without SP/HTAB at either end (str.strip() on an ASCII value
 * that has passed is_text: the only whitespace left is SP and HTAB). */
static void
strip(const Py_UCS1 *p, Py_ssize_t *start, Py_ssize_t *end)
{
    while (*start < *end && (p[*start] == ' ' || p[*start] == '\t'))
        (*start)++;
    while (*end > *start && (p[*end - 1] == ' ' || p[*end - 1] == '\t'))
        (*end)--;
}

/* What the fields say about framing. */
struct fields {
    long long length;  /* -1: no Content-Length */
    int close, has_date, has_server;
};

enum { TAKE = 1, DEFER = 0, FAIL = -1 };

/* A watched field (RFC 9110 §7.6.1 hop-by-hop, Content-Length, Transfer-Encoding): *kind
 * is 1 when handled here (not copied), 0 for an ordinary field. TAKE or DEFER. */
static int
watched(const Py_UCS1 *name, Py_ssize_t nlen, PyObject *value, struct fields *f, int *kind)
{
    const Py_UCS1 *v = PyUnicode_1BYTE_DATA(value);
    Py_ssize_t start = 0, end = PyUnicode_GET_LENGTH(value);
    int ascii = PyUnicode_IS_ASCII(value);
    *kind = 1;
    if (lower_eq(name, nlen, "content-length")) {
        strip(v, &start, &end);
        if (!ascii || start == end || end - start > 18)
            return DEFER;
        long long length = 0;
        for (Py_ssize_t i = start; i < end; i++) {
            if (v[i] < '0' || v[i] > '9')
                return DEFER;
            length = length * 10 + (v[i] - '0');
        }
        if (f->length >= 0 && f->length != length)
            return DEFER;  /* conflicting values: the reference raises */
        f->length = length;
        return TAKE;
    }
    if (lower_eq(name, nlen, "transfer-encoding")) {
        /* PEP 3333: no hop-by-hop fields; "chunked" is taken as "frame it for me". */
        strip(v, &start, &end);
        return ascii && lower_eq(v + start, end - start, "chunked") ? TAKE : DEFER;
    }
    if (lower_eq(name, nlen, "connection")) {
        if (!ascii)
            return DEFER;
        /* Honour "close" (RFC 9110 §7.6.1); every other option is hop-by-hop. */
        for (Py_ssize_t i = 0; i <= end;) {
            Py_ssize_t stop = i;
            while (stop < end && v[stop] != ',')
                stop++;
            Py_ssize_t s = i, e = stop;
            strip(v, &s, &e);
            if (lower_eq(v + s, e - s, "close"))
                f->close = 1;
            i = stop + 1;
        }
        return TAKE;
    }
    if (lower_eq(name, nlen, "keep-alive") || lower_eq(name, nlen, "upgrade") ||
        lower_eq(name, nlen, "proxy-connection"))
        return TAKE;  /* dropped */
    *kind = 0;
    if (lower_eq(name, nlen, "date"))
        f->has_date = 1;
    else if (lower_eq(name, nlen, "server"))
        f->has_server = 1;
    return TAKE;
}

/* One field: checked, then copied as "name: value\r\n" or noted. TAKE, DEFER or FAIL. */
static int
add_field(struct buf *b, PyObject *item, struct fields *f)
{
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2)
        return DEFER;
    PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
    if (!PyUnicode_CheckExact(name) || !PyUnicode_CheckExact(value) || !STR_READY(name) ||
        !STR_READY(value) || !PyUnicode_IS_ASCII(name) ||
        PyUnicode_KIND(value) != PyUnicode_1BYTE_KIND)
        return DEFER;
    const Py_UCS1 *n = PyUnicode_1BYTE_DATA(name), *v = PyUnicode_1BYTE_DATA(value);
    Py_ssize_t nlen = PyUnicode_GET_LENGTH(name), vlen = PyUnicode_GET_LENGTH(value);
    if (nlen == 0)
        return DEFER;
    for (Py_ssize_t i = 0; i < nlen; i++) {
        if (!is_tchar[n[i]])
            return DEFER;
    }
    for (Py_ssize_t i = 0; i < vlen; i++) {
        if (!is_text[v[i]])
            return DEFER;  /* CR, LF, NUL...: response splitting, the reference refuses */
    }
    int kind = 0;
    /* Every watched name has 4 to 17 characters: the others skip the comparisons. */
    if (nlen >= 4 && nlen <= 17 && watched(n, nlen, value, f, &kind) == DEFER)
        return DEFER;
    if (kind)
        return TAKE;
    if (buf_add(b, n, nlen) < 0 || buf_add(b, ": ", 2) < 0 || buf_add(b, v, vlen) < 0 ||
        buf_add(b, "\r\n", 2) < 0)
        return FAIL;
    return TAKE;
}

/* The status code of a valid WSGI status (RFC 9112 §4), its line written; else -1. */
static int
status_line(struct buf *b, PyObject *status)
{
    if (!PyUnicode_CheckExact(status) || !STR_READY(status) ||
        PyUnicode_KIND(status) != PyUnicode_1BYTE_KIND)
        return -1;
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(status);
    Py_ssize_t len = PyUnicode_GET_LENGTH(status);
    if (len < 3 || s[0] < '1' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' ||
        s[2] > '9' || (len > 3 && s[3] != ' '))
        return -1;
    for (Py_ssize_t i = 4; i < len; i++) {
        if (!is_text[s[i]])
            return -1;
    }
    /* The SP after the code is required even without a reason phrase. */
    if (buf_add(b, "HTTP/1.1 ", 9) < 0 || buf_add(b, s, len) < 0 ||
        (len == 3 && buf_add(b, " ", 1) < 0) || buf_add(b, "\r\n", 2) < 0)
        return -2;
    return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

/* What head() needs of the framer and its request (borrowed: no Python code runs while
 * they are used, and the framer holds them). */
struct framer_parts {
    PyObject *date, *server, *method, *version, *keep_alive;
};

/* TAKE when the framer is ours, unused, and its request of the usual shape; DEFER
 * otherwise (an unset attribute, head() twice: the reference raises). */
static int
read_framer(const struct bound *bd, PyObject *framer, struct framer_parts *p)
{
    PyObject *helpers = bd->helpers;
    if (Py_TYPE(framer) != (PyTypeObject *)PyTuple_GET_ITEM(helpers, H_CLASS))
        return DEFER;
    PyObject *stage = SLOT(framer, bd->offset[S_STAGE]);
    PyObject *request = SLOT(framer, bd->offset[S_REQUEST]);
    if (stage == NULL || !PyLong_CheckExact(stage) || PyObject_IsTrue(stage) != 0 ||
        request == NULL ||
        Py_TYPE(request) != (PyTypeObject *)PyTuple_GET_ITEM(helpers, H_REQUEST_CLASS))
        return DEFER;
    p->date = SLOT(framer, bd->offset[S_DATE]);
    p->server = SLOT(framer, bd->offset[S_SERVER]);
    p->method = SLOT(request, bd->offset[R_METHOD]);
    p->version = SLOT(request, bd->offset[R_HTTP_VERSION]);
    p->keep_alive = SLOT(request, bd->offset[R_KEEP_ALIVE]);
    return p->date && PyBytes_CheckExact(p->date) && p->server &&
                   PyBytes_CheckExact(p->server) && p->method &&
                   PyUnicode_CheckExact(p->method) && STR_READY(p->method) && p->version &&
                   PyUnicode_CheckExact(p->version) && STR_READY(p->version) &&
                   p->keep_alive &&
                   PyBool_Check(p->keep_alive)
               ? TAKE
               : DEFER;
}

/* "HEAD", "1.1", "1.0": compared without a call (the strings are short and ASCII). */
static int
str_is(PyObject *s, const char *ascii)
{
    Py_ssize_t len = (Py_ssize_t)strlen(ascii);
    return PyUnicode_IS_ASCII(s) && PyUnicode_GET_LENGTH(s) == len &&
           memcmp(PyUnicode_1BYTE_DATA(s), ascii, (size_t)len) == 0;
}

/* The lines after the fields, as the reference adds them, and the framing chosen
 * (RFC 9110 §6.4.1, RFC 9112 §6.3, §7.1, §9.3, §9.6). */
static int
close_head(struct buf *b, struct framer_parts *p, struct fields *f, int code,
           int *framing, int *keep_alive)
{
    int http11 = str_is(p->version, "1.1");
    if (!f->has_date && (buf_add(b, "Date: ", 6) < 0 ||
                         buf_add(b, PyBytes_AS_STRING(p->date), PyBytes_GET_SIZE(p->date)) < 0 ||
                         buf_add(b, "\r\n", 2) < 0))
        return FAIL;
    if (!f->has_server &&
        buf_add(b, PyBytes_AS_STRING(p->server), PyBytes_GET_SIZE(p->server)) < 0)
        return FAIL;
    if (code < 200 || code == 204 || code == 304 || str_is(p->method, "HEAD"))
        *framing = H_NONE;  /* these responses have no content */
    else if (f->length >= 0)
        *framing = H_LENGTH;
    else
        *framing = http11 ? H_CHUNKED : H_CLOSE;  /* HTTP/1.0 knows no chunked coding */
    if (f->length >= 0 && code >= 200 && code != 204) {
        /* Kept for HEAD and 304 (RFC 9110 §8.6): it describes the GET's representation. */
        if (buf_str(b, "Content-Length: ") < 0 || buf_int(b, f->length) < 0 ||
            buf_add(b, "\r\n", 2) < 0)
            return FAIL;
    } else if (*framing == H_CHUNKED && buf_str(b, "Transfer-Encoding: chunked\r\n") < 0) {
        return FAIL;
    }
    *keep_alive = p->keep_alive == Py_True && !f->close && *framing != H_CLOSE;
    if (!*keep_alive) {
        if (buf_str(b, "Connection: close\r\n") < 0)
            return FAIL;
    } else if (str_is(p->version, "1.0") && buf_str(b, "Connection: keep-alive\r\n") < 0) {
        return FAIL;  /* an HTTP/1.0 client keeps the connection only when told */
    }
    return buf_add(b, "\r\n", 2) < 0 ? FAIL : TAKE;
}

/* Stores value (a new reference, stolen) in a slot; 0, or -1 when value is NULL. */
static int
slot_set(PyObject *obj, Py_ssize_t offset, PyObject *value)
{
    if (value == NULL)
        return -1;
    PyObject *old = SLOT(obj, offset);
    SLOT(obj, offset) = value;
    Py_XDECREF(old);  /* an int, a bool or an enum member: no finaliser runs */
    return 0;
}

/* The framer's state after head(), as the reference leaves it. */
static int
set_state(const struct bound *bd, PyObject *framer, int code, int framing, int keep_alive,
          long long length)
{
    const Py_ssize_t *off = bd->offset;
    if (slot_set(framer, off[S_STATUS_CODE], PyLong_FromLong(code)) < 0 ||
        slot_set(framer, off[S_KEEP_ALIVE], Py_NewRef(keep_alive ? Py_True : Py_False)) < 0 ||
        slot_set(framer, off[S_FRAMING], Py_NewRef(PyTuple_GET_ITEM(bd->helpers, framing))) <
            0 ||
        (framing == H_LENGTH &&
         slot_set(framer, off[S_REMAINING], PyLong_FromLongLong(length)) < 0))
        return -1;
    return slot_set(framer, off[S_STAGE], PyLong_FromLong(1));
}

/* The head's bytes (new reference), NULL with an exception, or Py_NotImplemented (new
 * reference) for the reference to decide. */
static PyObject *
frame_head(const struct bound *bd, PyObject *framer, PyObject *status, PyObject *headers,
           struct buf *b)
{
    struct framer_parts p;
    if (read_framer(bd, framer, &p) != TAKE || !PyList_CheckExact(headers))
        return Py_NewRef(Py_NotImplemented);
    int code = status_line(b, status);
    if (code < 0)
        return code == -2 ? NULL : Py_NewRef(Py_NotImplemented);
    struct fields f = {-1, 0, 0, 0};
    /* No Python code runs in the loop: the list cannot change under it. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        int rc = add_field(b, PyList_GET_ITEM(headers, i), &f);
        if (rc != TAKE)
            return rc == FAIL ? NULL : Py_NewRef(Py_NotImplemented);
    }
    int framing, keep_alive;
    if (close_head(b, &p, &f, code, &framing, &keep_alive) == FAIL)
        return NULL;
    PyObject *data = PyBytes_FromStringAndSize(b->data, b->len);
    if (data != NULL && set_state(bd, framer, code, framing, keep_alive, f.length) < 0)
        Py_CLEAR(data);
    return data;
}

static const char capsule_name[] = "preforkd.native._h1frame.bound";

/* head(self, status, headers), bound to ResponseFramer as a method. */
static PyObject *
head(PyObject *capsule, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    const struct bound *bd = PyCapsule_GetPointer(capsule, capsule_name);
    if (bd == NULL)
        return NULL;
    if (PyVectorcall_NARGS(nargsf) != 3 || kwnames != NULL)
        return PyObject_Vectorcall(PyTuple_GET_ITEM(bd->helpers, H_FALLBACK), args, nargsf,
                                   kwnames);
    struct buf b;
    b.data = b.small;
    b.len = 0;
    b.cap = (Py_ssize_t)sizeof(b.small);
    PyObject *result = frame_head(bd, args[0], args[1], args[2], &b);
    if (b.data != b.small)
        PyMem_Free(b.data);
    if (result == Py_NotImplemented) {
        Py_DECREF(result);
        return PyObject_Vectorcall(PyTuple_GET_ITEM(bd->helpers, H_FALLBACK), args, nargsf,
                                   kwnames);
    }
    return result;
}

static PyMethodDef head_def = {
    "head", (PyCFunction)(void (*)(void))head, METH_FASTCALL | METH_KEYWORDS,
    "head(status, headers) -> bytes\n\n"
    "The status line and header section; the Python head() decides every other case.",
};

static PyObject *
bind_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != H_COUNT || !PyCallable_Check(args[H_FALLBACK]) ||
        !PyType_Check(args[H_CLASS]) || !PyType_Check(args[H_REQUEST_CLASS])) {
        PyErr_SetString(PyExc_TypeError,
                        "bind_head(head, cls, request_cls, none, length, chunked, close)");
        return NULL;
    }
    struct bound *bd = PyMem_Calloc(1, sizeof(*bd));
    if (bd == NULL)
        return PyErr_NoMemory();
    for (int i = 0; i < OFFSETS; i++) {
        PyObject *cls = args[i < R_METHOD ? H_CLASS : H_REQUEST_CLASS];
        if ((bd->offset[i] = slot_offset(cls, slot_names[i], 1)) < 0) {
            PyMem_Free(bd);
            return NULL;
        }
    }
    PyObject *fn = bind_builtin(&head_def, module, capsule_name, bd, args, nargs);
    if (fn == NULL)
        return NULL;
    /* A builtin is no descriptor: wrapped, it binds to the instance as a method does. */
    PyObject *method = PyInstanceMethod_New(fn);
    Py_DECREF(fn);
    return method;
}

static PyMethodDef h1frame_methods[] = {
    {"bind_head", (PyCFunction)(void (*)(void))bind_head, METH_FASTCALL,
     "bind_head(head, cls, request_cls, none, length, chunked, close) -> method\n\n"
     "A C ResponseFramer.head that hands every case it does not take to head."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef h1frame_module = {
    PyModuleDef_HEAD_INIT, "_h1frame", "The head of an HTTP/1.1 response, in C.", -1,
    h1frame_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__h1frame(void)
{
    init_tables();
    return PyModule_Create(&h1frame_module);
}
