/* What preforkd's C accelerators share (each module includes it and gets its own static
 * copy): the CPython version shims, RFC 9110's token characters, reading __slots__
 * in place, and a builtin bound to its Python helpers through a capsule.
 *
 * Why slots in place: a PyObject_GetAttr costs ~150 instructions, a large share of what
 * a module saves per request. An instance of exactly the class bound at import, whose
 * type does not customise attribute access, keeps a __slots__ attribute at a fixed
 * offset, as its member descriptor says; slot_offset() reads that offset once. */
#ifndef PREFORKD_NATIVE_COMMON_H
#define PREFORKD_NATIVE_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define SLOT_TYPE T_OBJECT_EX
#define SLOT_READONLY READONLY
/* A str whose characters can be read in place (3.11 may still meet a legacy one, left
 * to the Python code; 3.12 has no others). */
#define STR_READY(o) PyUnicode_IS_READY(o)
#else
#define SLOT_TYPE Py_T_OBJECT_EX
#define SLOT_READONLY Py_READONLY
#define STR_READY(o) 1
#endif

/* The object in the slot at offset (borrowed; NULL when unset). */
#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
 * "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA. */
static inline void
init_tchar(unsigned char table[256])
{
    const char *extra = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++)
        table[c] = ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                    (c >= 'A' && c <= 'Z') || (c && strchr(extra, c) != NULL));
}

/* Where the __slots__ attribute `name` of cls lives in its instances, or -1 with
 * TypeError when it is not a plain object slot (writable, if `writable`), or the class
 * customises attribute access (reading the slot directly would bypass it). */
static inline Py_ssize_t
slot_offset(PyObject *cls, const char *name, int writable)
{
    PyTypeObject *type = (PyTypeObject *)cls;
    Py_ssize_t offset = -1;
    if (type->tp_getattro == PyObject_GenericGetAttr &&
        (!writable || type->tp_setattro == PyObject_GenericSetAttr)) {
        PyObject *descr = PyObject_GetAttrString(cls, name);
        if (descr == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            PyErr_Clear();  /* no such attribute: the TypeError below says so */
        } else if (Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                   PyType_IsSubtype(type, PyDescr_TYPE(descr))) {
            PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
            if (member->type == SLOT_TYPE && !(writable && (member->flags & SLOT_READONLY)))
                offset = member->offset;
        }
        Py_XDECREF(descr);
    }
    if (offset < 0)
        PyErr_Format(PyExc_TypeError, "%s.%s is not a plain slot", type->tp_name, name);
    return offset;
}

/* A capsule's destructor for a bound struct: PyMem-allocated, its first member the
 * helpers tuple (a pointer to a struct is a pointer to its first member). */
static inline void
bound_free(PyObject *capsule)
{
    PyObject **helpers = PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule));
    if (helpers != NULL) {
        Py_XDECREF(*helpers);
        PyMem_Free(helpers);
    }
}

/* The builtin `def` whose self is a capsule named `name` owning `bound` (see bound_free),
 * with args[0:nargs] kept as its helpers tuple. `bound` is freed on failure. */
static inline PyObject *
bind_builtin(PyMethodDef *def, PyObject *module, const char *name, void *bound,
             PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *capsule = PyCapsule_New(bound, name, bound_free);
    if (capsule == NULL) {
        PyMem_Free(bound);
        return NULL;
    }
    PyObject *helpers = PyTuple_New(nargs);
    if (helpers == NULL) {
        Py_DECREF(capsule);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(helpers, i, Py_NewRef(args[i]));
    *(PyObject **)bound = helpers;
    PyObject *fn = PyCFunction_NewEx(def, capsule, module);
    Py_DECREF(capsule);
    return fn;
}

#endif
