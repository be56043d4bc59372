/* livepatch._frozenheap: gc.get_referrers over the objects gc.freeze() froze, without unfreezing them.
 *
 * Theory of operation. gc.freeze() moves every object the cyclic collector tracks into its "permanent
 * generation", which gc.get_referrers does not search (it walks generations 0-2 only). kvserver freezes
 * its whole heap at start-up (src/kvserver/cli.py), and livepatch.mve freezes before it forks, so
 * staging's heap searches (livepatch.runtime.values) would be blind to every holder created before the
 * freeze. Unfreezing for the search and freezing again is not exact either: the second freeze also
 * freezes everything alive at that moment that was not frozen before, and cyclic garbage those objects
 * become later (a closed connection's cycle) is then never collected -- a leak per patch.
 *
 * `referrers(*objs)` walks the permanent generation's list in place, calling each object's tp_traverse
 * with a visitor that compares pointers (what gcmodule.c's referrersvisit does for the generations), and
 * returns the frozen objects that refer to any of `objs`. Nothing is moved, allocated in the collector
 * or run in Python while it walks (the GIL is held; the visitor only compares), so the list cannot
 * change under it. Cost: one tp_traverse per frozen object, as one gc.get_referrers pass over them.
 *
 * The permanent generation is an interpreter internal: this file reads CPython 3.11's layout
 * (internal/pycore_gc.h, pycore_interp.h) and refuses to build on any other version. The extension is
 * optional (setup.py): without it, livepatch.runtime.values refuses the patches that need a heap search
 * while objects are frozen, saying why, rather than search half the heap.
 */
#define PY_SSIZE_T_CLEAN
#define Py_BUILD_CORE_MODULE 1
#include <Python.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030C0000
#error "livepatch._frozenheap reads CPython 3.11's collector layout; not built for this version"
#endif

#include "internal/pycore_gc.h"
#include "internal/pycore_interp.h"

#define FROM_GC(g) ((PyObject *)(((PyGC_Head *)(g)) + 1))

static int
is_target(PyObject *obj, void *targets)
{
    PyObject *objs = (PyObject *)targets;
    Py_ssize_t n = PyTuple_GET_SIZE(objs);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyTuple_GET_ITEM(objs, i) == obj) {
            return 1; /* stops this object's traversal: it refers to a target */
        }
    }
    return 0;
}

static PyObject *
frozen_referrers(PyObject *Py_UNUSED(module), PyObject *objs)
{
    PyObject *result = PyList_New(0);
    if (result == NULL) {
        return NULL;
    }
    PyInterpreterState *interp = PyInterpreterState_Get();
    PyGC_Head *head = &interp->gc.permanent_generation.head;
    for (PyGC_Head *gc = _PyGCHead_NEXT(head); gc != head; gc = _PyGCHead_NEXT(gc)) {
        PyObject *op = FROM_GC(gc);
        traverseproc traverse = Py_TYPE(op)->tp_traverse;
        if (op == objs || traverse == NULL) {
            continue;
        }
        if (traverse(op, is_target, objs)) {
            /* the list's own storage is plain memory: appending never runs the collector */
            if (PyList_Append(result, op) < 0) {
                Py_DECREF(result);
                return NULL;
            }
        }
    }
    return result;
}

static PyObject *
frozen_count(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(args))
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    PyGC_Head *head = &interp->gc.permanent_generation.head;
    Py_ssize_t n = 0;
    for (PyGC_Head *gc = _PyGCHead_NEXT(head); gc != head; gc = _PyGCHead_NEXT(gc)) {
        n++;
    }
    return PyLong_FromSsize_t(n);
}

static PyMethodDef methods[] = {
    {"referrers", (PyCFunction)frozen_referrers, METH_VARARGS,
     "referrers(*objs) -> list: the frozen objects (gc.freeze) that refer to any of objs"},
    {"count", (PyCFunction)frozen_count, METH_NOARGS,
     "count() -> int: the objects in the permanent generation (walks the list; as gc.get_freeze_count)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "livepatch._frozenheap",
    "gc.get_referrers over the frozen objects, in place (see the file's theory of operation).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__frozenheap(void)
{
    return PyModule_Create(&module);
}
