/* livepatch._handoff: the last park rings the patcher's doorbell once the GIL is free.
 *
 * Theory of operation. A global transition is a chain of hand-offs: each busy managed thread parks in
 * turn (blocking on its gate hands the GIL to the next one) and the last park rings the patcher's
 * doorbell (runtime/doorbell.py). Rung from Python, the ring wakes the patcher while the ringer still
 * holds the GIL for its last few lines (leaving the registry lock, entering the gate's wait): the patcher
 * wakes, blocks on the GIL, and is woken a second time when the ringer blocks. Here the ring happens with
 * the GIL already released, so the patcher, woken, finds it free.
 *
 * `ring_then_acquire(lock, timeout, ring)` is `lock.acquire(True, timeout)`, except that with the GIL
 * released it first releases `ring` (when held). Signals are handled as CPython's own acquire handles
 * them (pending calls run, an exception they raise propagates, the wait goes on otherwise).
 *
 * A lock's state lives in two places: the OS semaphore and the object's `locked` flag, which CPython
 * reads and writes with the GIL held. This file keeps the same rule (`locked` cleared before the
 * semaphore is posted, set after it is taken, with the GIL held, as _threadmodule.c does around its own
 * GIL-free waits), so a Python-level release() never posts a semaphore twice. It mirrors CPython 3.11's
 * `lockobject` (Modules/_threadmodule.c), checks the layout at import, and refuses to build on another
 * version. The extension is optional (setup.py): without it runtime/doorbell.py rings just before an
 * ordinary acquire, from Python: the same behaviour, with the patcher's extra wake-up.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <time.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030C0000
#error "livepatch._handoff mirrors CPython 3.11's _thread.lock layout; not built for this version"
#endif

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock_lock;
    PyObject *in_weakreflist;
    char locked; /* CPython's own sanity flag: written with the GIL held */
} lockobject;

static PyTypeObject *lock_type; /* type(_thread.allocate_lock()), checked at import */

static long long
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int
check_lock(PyObject *obj, const char *what)
{
    if (Py_TYPE(obj) != lock_type) {
        PyErr_Format(PyExc_TypeError, "%s must be a _thread.lock, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *
ring_then_acquire(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *lock_obj, *ring_obj;
    double timeout;
    if (!PyArg_ParseTuple(args, "OdO:ring_then_acquire", &lock_obj, &timeout, &ring_obj)) {
        return NULL;
    }
    if (check_lock(lock_obj, "lock") < 0 || check_lock(ring_obj, "ring") < 0) {
        return NULL;
    }
    if (!(timeout >= 0.0) || isinf(timeout)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be finite and >= 0");
        return NULL;
    }
    lockobject *lk = (lockobject *)lock_obj;
    PyThread_type_lock ring = NULL;
    if (((lockobject *)ring_obj)->locked) {
        ((lockobject *)ring_obj)->locked = 0; /* as lock.release() does, before posting (GIL held) */
        ring = ((lockobject *)ring_obj)->lock_lock;
    }
    long long deadline = now_ns() + (long long)(timeout * 1e9);
    PyLockStatus r;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        if (ring != NULL) {
            PyThread_release_lock(ring);
            ring = NULL;
        }
        r = PyThread_acquire_lock_timed(lk->lock_lock, 0, 0);
        if (r != PY_LOCK_ACQUIRED) {
            long long left_us = (deadline - now_ns() + 999) / 1000;
            if (left_us > 0) {
                if (left_us > (long long)PY_TIMEOUT_MAX) {
                    left_us = (long long)PY_TIMEOUT_MAX;
                }
                r = PyThread_acquire_lock_timed(lk->lock_lock, (PY_TIMEOUT_T)left_us, 1);
            }
        }
        Py_END_ALLOW_THREADS
        if (r != PY_LOCK_INTR) {
            break;
        }
        if (Py_MakePendingCalls() < 0) { /* a signal's handler raised: propagate, as acquire() does */
            return NULL;
        }
    }
    if (r == PY_LOCK_ACQUIRED) {
        lk->locked = 1; /* after taking it, with the GIL held, as lock.acquire() does */
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyMethodDef methods[] = {
    {"ring_then_acquire", ring_then_acquire, METH_VARARGS,
     "ring_then_acquire(lock, timeout, ring) -> bool\n\n"
     "lock.acquire(True, timeout), except that with the GIL released it first releases `ring` (a held\n"
     "_thread.lock; a free one is left alone)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "livepatch._handoff",
    "The last park rings the patcher's doorbell once the GIL is free (runtime/doorbell.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__handoff(void)
{
    PyObject *thread = PyImport_ImportModule("_thread");
    if (thread == NULL) {
        return NULL;
    }
    PyObject *lk = PyObject_CallMethod(thread, "allocate_lock", NULL);
    Py_DECREF(thread);
    if (lk == NULL) {
        return NULL;
    }
    /* The layout check: the size, then the flag seen to follow acquire() and release(). */
    int ok = Py_TYPE(lk)->tp_basicsize == (Py_ssize_t)sizeof(lockobject)
             && ((lockobject *)lk)->lock_lock != NULL && ((lockobject *)lk)->locked == 0;
    PyObject *res = ok ? PyObject_CallMethod(lk, "acquire", NULL) : NULL;
    ok = ok && res != NULL && ((lockobject *)lk)->locked == 1;
    Py_XDECREF(res);
    res = ok ? PyObject_CallMethod(lk, "release", NULL) : NULL;
    ok = ok && res != NULL && ((lockobject *)lk)->locked == 0;
    Py_XDECREF(res);
    PyErr_Clear();
    lock_type = Py_TYPE(lk);
    Py_INCREF(lock_type);
    Py_DECREF(lk);
    if (!ok) {
        PyErr_SetString(PyExc_ImportError, "livepatch._handoff: _thread.lock's layout is not CPython 3.11's");
        return NULL;
    }
    return PyModule_Create(&module);
}
