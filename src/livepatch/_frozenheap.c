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
 * `all_referrers(*objs)` (session 10, livepatch.migrate) walks the three generations and the permanent one
 * the same way, with the targets in a sorted array of pointers searched by bisection: one heap walk
 * costs O(references * log(targets)) instead of the O(references * targets) of gc.get_referrers and
 * `referrers`, which compare each reference with every target (replacing a class with ten thousand
 * live instances took 27 s on a heap of a million objects that way). The result list, made before the
 * walk, sits in generation 0 and is skipped, as gc.get_referrers skips its own.
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

static int
compare_pointers(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(PyObject *const *)a;
    uintptr_t y = (uintptr_t)*(PyObject *const *)b;
    return (x > y) - (x < y);
}

typedef struct {
    PyObject **items; /* sorted by address */
    Py_ssize_t n;
} sorted_targets;

static int
is_sorted_target(PyObject *obj, void *arg)
{
    sorted_targets *t = (sorted_targets *)arg;
    return bsearch(&obj, t->items, (size_t)t->n, sizeof(PyObject *), compare_pointers) != NULL;
}

static int
collect_from(PyGC_Head *head, PyObject *objs, PyObject *result, sorted_targets *t)
{
    for (PyGC_Head *gc = _PyGCHead_NEXT(head); gc != head; gc = _PyGCHead_NEXT(gc)) {
        PyObject *op = FROM_GC(gc);
        traverseproc traverse = Py_TYPE(op)->tp_traverse;
        if (op == objs || op == result || traverse == NULL) {
            continue;
        }
        if (traverse(op, is_sorted_target, t)) {
            if (PyList_Append(result, op) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

static PyObject *
all_referrers(PyObject *Py_UNUSED(module), PyObject *objs)
{
    sorted_targets t;
    t.n = PyTuple_GET_SIZE(objs);
    t.items = PyMem_Malloc((size_t)(t.n ? t.n : 1) * sizeof(PyObject *));
    if (t.items == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < t.n; i++) {
        t.items[i] = PyTuple_GET_ITEM(objs, i);
    }
    qsort(t.items, (size_t)t.n, sizeof(PyObject *), compare_pointers);
    PyObject *result = PyList_New(0);
    if (result == NULL) {
        PyMem_Free(t.items);
        return NULL;
    }
    PyInterpreterState *interp = PyInterpreterState_Get();
    int failed = 0;
    for (int i = 0; i < NUM_GENERATIONS && !failed; i++) {
        failed = collect_from(&interp->gc.generations[i].head, objs, result, &t) < 0;
    }
    if (!failed) {
        failed = collect_from(&interp->gc.permanent_generation.head, objs, result, &t) < 0;
    }
    PyMem_Free(t.items);
    if (failed) {
        Py_DECREF(result);
        return NULL;
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
    {"all_referrers", (PyCFunction)all_referrers, METH_VARARGS,
     "all_referrers(*objs) -> list: every tracked object (generations and frozen) that refers to any of "
     "objs; bisects a sorted copy of objs, so many targets cost one walk"},
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
