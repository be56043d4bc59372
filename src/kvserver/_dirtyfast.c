/* kvserver._dirtyfast: the per-request part of hot standby's dirty tracking, in C (docs/standby.md).

Theory of operation
-------------------
kvserver.dirty tracks changes at the Keyspace: a tracked database's accessors note each key they are
asked about in the tracker's `touched` list and, for reads, the newest unacknowledged epoch that wrote
the key (`read_epoch`), then do the Keyspace's own work. In Python that is one more frame per key
access, which a GET of a clean key pays for nothing: about a third of a request's instructions. This
module does the same notes in C and then calls the plain Keyspace method, so a tracked access costs a
C call, a dictionary lookup and a list append on top of the untracked one.

The rules stay in kvserver.dirty (the pure-Python fallback, used when this module is not built):
  - `touch(db, key)`: append (DbState, key) to `touched`;
  - `note_read(db, key)`: if the DbState's `written` dict or `floor` is set, the epoch of the key's
    last unacknowledged write (else the floor) raises the tracker's `read_epoch`.
`configure(tracker)` points this module at the current tracker (its `states` dict and `touched` list
are read once there and must not be rebound; `written` and `floor` are read per access, as FLUSHDB
rebinds `written`). `methods(cls, bases)` returns method descriptors of cls (TrackedKeyspace) that
wrap the base (Keyspace) functions given; dirty.py installs them over its Python versions.

`Processor` is PrimaryHost.process's common case: run a read's requests (server.process_commands)
and, when they wrote nothing and read nothing unacknowledged and the client has no reply held and the
mode is not "full", return at once; otherwise hand over to the Python slow path (`slow(client,
wrote)`), which holds the replies. The same decision as the Python version, one frame less per read.
The event loop uses its two halves instead, `begin(commands)` and `end(client)` around a batch it runs
itself: calling process_commands from C entered the interpreter anew per batch (~400 instructions).

Read-only batches: when every command of a batch is in `readonly` (the command table's rows flagged
"readonly" and not "write", by the names a client may send), nothing it does can write, so `lookup`
notes no key in `touched` while it runs (a key is only shipped when a batch that wrote touched it) and
the batch does not read server.dirty (it cannot have changed it). `note_read` still runs: a read of
unacknowledged data waits as ever. Anything else a tracked method notes during such a batch (a store,
a delete) still lands in `touched` and sends the batch down the general path.

Held replies: livepatch.replication.HeldReplies keeps, per connection, a deque of (epoch, bytes,
time.monotonic()) waiting for epochs. Its rules are in protection.py (the pure-Python fallback); here
are the same `hold` and `release` in C, for every write's reply and every acknowledgement:
  - `hold_replies(held, conn, epoch, data)`: append to conn's queue, never with an epoch older than
    the queue's last (replies of one connection leave in order), count, note the newest epoch;
  - `release_held(held, acked)`: take, per connection, the replies whose epoch <= acked, joined.
A Processor given `held` moves a client's replies into it itself (PrimaryHost._hold's common case:
the client did not ask to be closed after its replies; when it did, the Python `hold` runs).
HeldReplies' __slots__ are read at fixed offsets, like the tracker's.

Concurrency: the event-loop thread only (the GIL is held throughout).
*/
#include <time.h>
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

static PyObject *g_tracker;  /* the DirtyTracker, or NULL */
static PyObject *g_states;   /* tracker.states: Keyspace -> DbState */
static PyObject *g_touched;  /* tracker.touched: list of (DbState, key) */
static int g_readonly_batch; /* a Processor runs a batch of read-only commands: lookup touches not */

static PyObject *s_dirty, *s_process_commands, *s_zero;

/* Offsets of __slots__ members, read once (methods() and configure()): the per-access reads then cost
   a load each instead of an attribute lookup. Keyspace: _data, _expires; DbState: written, floor;
   DirtyTracker: read_epoch, structural. */
static Py_ssize_t off_data, off_expires, off_written, off_floor, off_read_epoch, off_structural;
/* DbState.dirty; Protection: epoch, acked, active (read by Processor's write path). */
static Py_ssize_t off_dirty, off_p_epoch, off_p_acked, off_p_active;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static int
slot_offset(PyObject *cls, const char *name, Py_ssize_t *out)
{
    PyObject *d = PyObject_GetAttrString(cls, name);
    if (d == NULL)
        return -1;
    int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
             ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
    if (ok)
        *out = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s is not a __slots__ member", name);
        return -1;
    }
    return 0;
}

/* A slot's value (borrowed); NULL with AttributeError if it was never set. */
static PyObject *
slot(PyObject *obj, Py_ssize_t off, const char *name)
{
    PyObject *v = SLOT(obj, off);
    if (v == NULL)
        PyErr_Format(PyExc_AttributeError, "%s is not set", name);
    return v;
}

/* One wrapped Keyspace function per tracked method, in the order of `kinds`. */
enum { M_LOOKUP, M_CONTAINS, M_STORE, M_DELETE, M_REPLACE, M_SET_EXPIRE, M_PERSIST, M_COUNT };
static PyObject *g_base[M_COUNT];

/* The last database asked about and its DbState (borrowed: g_states holds both, and is never
   rebound while configured; configure() forgets them): most requests use the same database, and
   this saves a dictionary lookup per tracked access. */
static PyObject *g_last_db, *g_last_state;

static PyObject *
state_of(PyObject *db)
{
    if (db == g_last_db && db != NULL)
        return g_last_state;
    if (g_states == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a tracked keyspace without a tracker");
        return NULL;
    }
    PyObject *state = PyDict_GetItemWithError(g_states, db); /* borrowed */
    if (state == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_KeyError, "a tracked keyspace the tracker does not know");
    if (state != NULL) {
        g_last_db = db;
        g_last_state = state;
    }
    return state;
}

static int
touch(PyObject *state, PyObject *key)
{
    PyObject *pair = PyTuple_Pack(2, state, key);
    if (pair == NULL)
        return -1;
    int rc = PyList_Append(g_touched, pair);
    Py_DECREF(pair);
    return rc;
}

static int
note_read(PyObject *state, PyObject *key)
{
    PyObject *written = slot(state, off_written, "written");
    PyObject *floor = slot(state, off_floor, "floor");
    if (written == NULL || floor == NULL)
        return -1;
    if (!PyDict_Check(written) || !PyLong_Check(floor)) {
        PyErr_SetString(PyExc_TypeError, "DbState.written must be a dict, floor an int");
        return -1;
    }
    /* if state.written or state.floor: epoch = state.written.get(key, state.floor) */
    if (!PyDict_GET_SIZE(written) && Py_SIZE(floor) == 0) /* Py_SIZE(int) == 0: zero */
        return 0;
    PyObject *epoch = PyDict_GET_SIZE(written) ? PyDict_GetItemWithError(written, key) : NULL;
    if (epoch == NULL) {
        if (PyErr_Occurred())
            return -1;
        if (Py_SIZE(floor) == 0)
            return 0; /* a key not written since the last acknowledgement, no floor: nothing */
        epoch = floor;
    }
    PyObject *current = slot(g_tracker, off_read_epoch, "read_epoch");
    if (current == NULL)
        return -1;
    int newer = PyObject_RichCompareBool(epoch, current, Py_GT);
    if (newer <= 0)
        return newer;
    Py_INCREF(epoch);
    Py_SETREF(SLOT(g_tracker, off_read_epoch), epoch);
    return 0;
}

/* The base function with self prepended to args (args[-1] is writable under
   PY_VECTORCALL_ARGUMENTS_OFFSET, but a method descriptor does not promise it: copy). */
static PyObject *
call_base(int which, PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *small[8];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    Py_ssize_t total = nargs + nkw;
    if (total + 1 > (Py_ssize_t)(sizeof small / sizeof small[0]))
        return PyErr_Format(PyExc_TypeError, "too many arguments");
    small[0] = self;
    for (Py_ssize_t i = 0; i < total; i++)
        small[i + 1] = args[i];
    return PyObject_Vectorcall(g_base[which], small, (size_t)(nargs + 1), kwnames);
}

static PyObject *
wrap(int which, int touches, int reads, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
     PyObject *kwnames)
{
    if (nargs < 1)
        return PyErr_Format(PyExc_TypeError, "a key is required");
    PyObject *state = state_of(self);
    if (state == NULL)
        return NULL;
    if (touches && touch(state, args[0]) < 0)
        return NULL;
    if (reads && note_read(state, args[0]) < 0)
        return NULL;
    return call_base(which, self, args, nargs, kwnames);
}

#define WRAPPER(name, which, touches, reads)                                                    \
    static PyObject *name(PyObject *self, PyObject *const *args, Py_ssize_t nargs,             \
                          PyObject *kwnames)                                                    \
    {                                                                                           \
        return wrap(which, touches, reads, self, args, nargs, kwnames);                         \
    }

/* lookup(key, now_ms): Keyspace.lookup's common case (no key has a TTL: the value, or None) is done
   here; with TTLs the Python method runs (lazy expiry has one home, kvserver.keyspace). */
static PyObject *
t_lookup(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 2 || kwnames != NULL)
        return wrap(M_LOOKUP, 1, 1, self, args, nargs, kwnames);
    PyObject *state = state_of(self);
    if (state == NULL || (!g_readonly_batch && touch(state, args[0]) < 0) ||
        note_read(state, args[0]) < 0)
        return NULL;
    PyObject *data = slot(self, off_data, "_data");
    PyObject *expires = slot(self, off_expires, "_expires");
    if (data == NULL || expires == NULL)
        return NULL;
    if (!PyDict_CheckExact(data) || !PyDict_CheckExact(expires) || PyDict_GET_SIZE(expires))
        return call_base(M_LOOKUP, self, args, nargs, kwnames);
    PyObject *value = PyDict_GetItemWithError(data, args[0]);
    if (value == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    return Py_NewRef(value);
}
WRAPPER(t_contains, M_CONTAINS, 0, 1)
WRAPPER(t_store, M_STORE, 1, 0)
WRAPPER(t_delete, M_DELETE, 1, 0)
WRAPPER(t_replace, M_REPLACE, 1, 0)
WRAPPER(t_set_expire, M_SET_EXPIRE, 1, 0)
WRAPPER(t_persist, M_PERSIST, 1, 0)

#define FLAGS (METH_FASTCALL | METH_KEYWORDS)
static PyMethodDef tracked_defs[M_COUNT] = {
    {"lookup", (PyCFunction)(void (*)(void))t_lookup, FLAGS, "Keyspace.lookup, tracked."},
    {"__contains__", (PyCFunction)(void (*)(void))t_contains, FLAGS, "in, tracked."},
    {"store", (PyCFunction)(void (*)(void))t_store, FLAGS, "Keyspace.store, tracked."},
    {"delete", (PyCFunction)(void (*)(void))t_delete, FLAGS, "Keyspace.delete, tracked."},
    {"replace", (PyCFunction)(void (*)(void))t_replace, FLAGS, "Keyspace.replace, tracked."},
    {"set_expire", (PyCFunction)(void (*)(void))t_set_expire, FLAGS, "set_expire, tracked."},
    {"persist", (PyCFunction)(void (*)(void))t_persist, FLAGS, "Keyspace.persist, tracked."},
};

/* methods(cls, bases: dict name -> function, keyspace, dbstate, tracker classes)
   -> dict name -> method descriptor of cls */
static PyObject *
methods(PyObject *module, PyObject *args)
{
    PyObject *cls, *bases, *keyspace, *dbstate, *tracker;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!:methods", &PyType_Type, &cls, &PyDict_Type, &bases,
                          &PyType_Type, &keyspace, &PyType_Type, &dbstate, &PyType_Type, &tracker))
        return NULL;
    if (slot_offset(keyspace, "_data", &off_data) < 0 ||
        slot_offset(keyspace, "_expires", &off_expires) < 0 ||
        slot_offset(dbstate, "written", &off_written) < 0 ||
        slot_offset(dbstate, "floor", &off_floor) < 0 ||
        slot_offset(dbstate, "dirty", &off_dirty) < 0 ||
        slot_offset(tracker, "read_epoch", &off_read_epoch) < 0 ||
        slot_offset(tracker, "structural", &off_structural) < 0)
        return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (int i = 0; i < M_COUNT; i++) {
        PyObject *base = PyDict_GetItemString(bases, tracked_defs[i].ml_name); /* borrowed */
        if (base == NULL) {
            Py_DECREF(out);
            return PyErr_Format(PyExc_KeyError, "no base function for %s",
                                tracked_defs[i].ml_name);
        }
        Py_INCREF(base);
        Py_XSETREF(g_base[i], base);
        PyObject *descr = PyDescr_NewMethod((PyTypeObject *)cls, &tracked_defs[i]);
        if (descr == NULL || PyDict_SetItemString(out, tracked_defs[i].ml_name, descr) < 0) {
            Py_XDECREF(descr);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(descr);
    }
    return out;
}

/* configure(tracker | None): the tracker whose states and touched list the wrappers use. */
static PyObject *
configure(PyObject *module, PyObject *tracker)
{
    g_last_db = g_last_state = NULL;
    if (tracker == Py_None) {
        Py_CLEAR(g_tracker);
        Py_CLEAR(g_states);
        Py_CLEAR(g_touched);
        Py_RETURN_NONE;
    }
    PyObject *states = PyObject_GetAttrString(tracker, "states");
    if (states == NULL)
        return NULL;
    PyObject *touched = PyObject_GetAttrString(tracker, "touched");
    if (touched == NULL) {
        Py_DECREF(states);
        return NULL;
    }
    if (!PyDict_Check(states) || !PyList_Check(touched)) {
        Py_DECREF(states);
        Py_DECREF(touched);
        return PyErr_Format(PyExc_TypeError, "tracker.states must be a dict, touched a list");
    }
    Py_INCREF(tracker);
    Py_XSETREF(g_tracker, tracker);
    Py_XSETREF(g_states, states);
    Py_XSETREF(g_touched, touched);
    Py_RETURN_NONE;
}


/* --------------------------------------------------------------------------------- held replies */
static PyObject *g_deque;  /* collections.deque */
static PyObject *s_one;
static PyObject *s_append, *s_popleft, *s_out, *s_close_after_reply, *s_empty;

/* deque.append and deque.popleft as the class's method descriptors: called with the queue as their
   first argument, no method lookup and no bound method per call (a queue of another type, which
   HeldReplies never makes, takes the generic call). */
static PyObject *g_deque_append, *g_deque_popleft;

static PyObject *
queue_append(PyObject *queue, PyObject *item)
{
    if (!Py_IS_TYPE(queue, (PyTypeObject *)g_deque))
        return PyObject_CallMethodOneArg(queue, s_append, item);
    PyObject *args[2] = {queue, item};
    return PyObject_Vectorcall(g_deque_append, args, 2, NULL);
}

static PyObject *
queue_popleft(PyObject *queue)
{
    if (!Py_IS_TYPE(queue, (PyTypeObject *)g_deque))
        return PyObject_CallMethodNoArgs(queue, s_popleft);
    return PyObject_Vectorcall(g_deque_popleft, &queue, 1, NULL);
}

static PyTypeObject *g_held_type; /* the class the offsets below were read from */
static Py_ssize_t off_h_by_conn, off_h_count, off_h_newest;

static int
held_offsets(PyObject *held)
{
    PyObject *t = (PyObject *)Py_TYPE(held);
    if ((PyTypeObject *)t == g_held_type)
        return 0;
    if (slot_offset(t, "by_conn", &off_h_by_conn) < 0 || slot_offset(t, "count", &off_h_count) < 0 ||
        slot_offset(t, "_newest", &off_h_newest) < 0)
        return -1;
    g_held_type = (PyTypeObject *)t;
    return 0;
}

/* time.monotonic(): the same clock, and the same arithmetic (nanoseconds / 1e9). */
static PyObject *
monotonic(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyFloat_FromDouble((double)((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9);
}

/* HeldReplies.hold(conn, epoch, data) (keep in step with protection.py). */
static int
held_hold(PyObject *held, PyObject *conn, PyObject *epoch, PyObject *data)
{
    if (held_offsets(held) < 0)
        return -1;
    PyObject *by_conn = slot(held, off_h_by_conn, "by_conn");
    if (by_conn == NULL)
        return -1;
    if (!PyDict_CheckExact(by_conn)) {
        PyErr_SetString(PyExc_TypeError, "HeldReplies.by_conn must be a dict");
        return -1;
    }
    PyObject *queue = PyDict_GetItemWithError(by_conn, conn); /* borrowed */
    Py_INCREF(epoch);
    if (queue == NULL) {
        if (PyErr_Occurred() || (queue = PyObject_CallNoArgs(g_deque)) == NULL)
            goto fail_epoch;
        if (PyDict_SetItem(by_conn, conn, queue) < 0) {
            Py_DECREF(queue);
            goto fail_epoch;
        }
    } else {
        Py_INCREF(queue);
        PyObject *last = PySequence_GetItem(queue, -1);
        if (last == NULL)
            goto fail_queue;
        if (!PyTuple_CheckExact(last) || PyTuple_GET_SIZE(last) != 3) {
            Py_DECREF(last);
            PyErr_SetString(PyExc_TypeError, "a held reply is (epoch, bytes, time)");
            goto fail_queue;
        }
        PyObject *before = PyTuple_GET_ITEM(last, 0);
        int later = PyObject_RichCompareBool(before, epoch, Py_GT);
        if (later > 0)
            Py_SETREF(epoch, Py_NewRef(before)); /* never overtake a held reply of conn */
        Py_DECREF(last);
        if (later < 0)
            goto fail_queue;
    }
    PyObject *now = monotonic();
    PyObject *entry = now ? PyTuple_Pack(3, epoch, data, now) : NULL;
    Py_XDECREF(now);
    PyObject *r = entry ? queue_append(queue, entry) : NULL;
    Py_XDECREF(entry);
    if (r == NULL)
        goto fail_queue;
    Py_DECREF(r);
    Py_DECREF(queue);
    PyObject *count = slot(held, off_h_count, "count");
    PyObject *newest = count ? slot(held, off_h_newest, "_newest") : NULL;
    PyObject *more = newest ? PyNumber_Add(count, s_one) : NULL;
    if (more == NULL)
        goto fail_epoch;
    Py_SETREF(SLOT(held, off_h_count), more);
    newest = SLOT(held, off_h_newest);
    int newer = PyObject_RichCompareBool(epoch, newest, Py_GT);
    if (newer > 0)
        Py_SETREF(SLOT(held, off_h_newest), Py_NewRef(epoch));
    Py_DECREF(epoch);
    return newer < 0 ? -1 : 0;
fail_queue:
    Py_DECREF(queue);
fail_epoch:
    Py_DECREF(epoch);
    return -1;
}

static PyObject *
hold_replies(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4)
        return PyErr_Format(PyExc_TypeError, "hold_replies(held, conn, epoch, data)");
    if (held_hold(args[0], args[1], args[2], args[3]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* HeldReplies.release(acked) (keep in step): [(conn, bytes joined)] of every reply whose epoch <=
   acked, connections in the dict's order. */
static PyObject *
release_held(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "release_held(held, acked)");
    PyObject *held = args[0], *acked = args[1];
    if (held_offsets(held) < 0)
        return NULL;
    PyObject *by_conn = slot(held, off_h_by_conn, "by_conn");
    if (by_conn == NULL)
        return NULL;
    if (!PyDict_CheckExact(by_conn))
        return PyErr_Format(PyExc_TypeError, "HeldReplies.by_conn must be a dict");
    PyObject *out = PyList_New(0);
    PyObject *conns = out ? PyDict_Keys(by_conn) : NULL; /* list(by_conn): it shrinks below */
    if (conns == NULL) {
        Py_XDECREF(out);
        return NULL;
    }
    PyObject *parts = NULL, *queue = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(conns); i++) {
        PyObject *conn = PyList_GET_ITEM(conns, i);
        queue = PyDict_GetItemWithError(by_conn, conn);
        if (queue == NULL) {
            if (PyErr_Occurred())
                goto fail;
            continue;
        }
        Py_INCREF(queue);
        if ((parts = PyList_New(0)) == NULL)
            goto fail;
        for (;;) {
            Py_ssize_t left = PyObject_Length(queue);
            if (left < 0)
                goto fail;
            if (left == 0)
                break;
            PyObject *first = PySequence_GetItem(queue, 0);
            if (first == NULL)
                goto fail;
            if (!PyTuple_CheckExact(first) || PyTuple_GET_SIZE(first) != 3) {
                Py_DECREF(first);
                PyErr_SetString(PyExc_TypeError, "a held reply is (epoch, bytes, time)");
                goto fail;
            }
            int due = PyObject_RichCompareBool(PyTuple_GET_ITEM(first, 0), acked, Py_LE);
            int ok = due > 0 ? PyList_Append(parts, PyTuple_GET_ITEM(first, 1)) : 0;
            Py_DECREF(first);
            if (due < 0 || ok < 0)
                goto fail;
            if (!due)
                break;
            PyObject *gone = queue_popleft(queue);
            if (gone == NULL)
                goto fail;
            Py_DECREF(gone);
        }
        Py_ssize_t n = PyList_GET_SIZE(parts);
        if (n) {
            PyObject *count = slot(held, off_h_count, "count");
            PyObject *taken = count ? PyLong_FromSsize_t(n) : NULL;
            PyObject *less = taken ? PyNumber_Subtract(count, taken) : NULL;
            Py_XDECREF(taken);
            if (less == NULL)
                goto fail;
            Py_SETREF(SLOT(held, off_h_count), less);
            int none_left = PyObject_Not(less);
            if (none_left < 0)
                goto fail;
            if (none_left)
                Py_SETREF(SLOT(held, off_h_newest), Py_NewRef(s_zero));
            Py_ssize_t left = PyObject_Length(queue);
            if (left < 0 || (left == 0 && PyDict_DelItem(by_conn, conn) < 0))
                goto fail;
            PyObject *data = _PyBytes_Join(s_empty, parts);
            PyObject *pair = data ? PyTuple_Pack(2, conn, data) : NULL;
            Py_XDECREF(data);
            int ok = pair ? PyList_Append(out, pair) : -1;
            Py_XDECREF(pair);
            if (ok < 0)
                goto fail;
        }
        Py_CLEAR(parts);
        Py_CLEAR(queue);
    }
    Py_DECREF(conns);
    return out;
fail:
    Py_XDECREF(parts);
    Py_XDECREF(queue);
    Py_DECREF(conns);
    Py_DECREF(out);
    return NULL;
}

/* ------------------------------------------------------------------------------------ Processor */
/* Command names whose membership in `readonly` a Processor remembers, and their longest length.
   The parser makes a new bytes object per request, so a set lookup hashes the name and compares it
   with the set's entry every time (~250 instructions per batch); a few names make up nearly every
   batch, and comparing a short name with the ones seen last costs a tenth of that. */
#define NAME_CACHE 4
#define NAME_CACHE_LEN 16

typedef struct {
    PyObject_HEAD
    PyObject *server;
    PyObject *tracker;
    PyObject *touched;
    PyObject *held_by_conn;
    PyObject *slow;
    PyObject *hold;       /* hold(client, epoch): move the client's replies into the held ones */
    PyObject *held;       /* the HeldReplies, to do `hold`'s common case here; or NULL */
    PyObject *protection; /* the Primary's Protection */
    PyObject *readonly;   /* set of command names (bytes) that only read */
    int full;
    int reads; /* tracker.reads: keep the per-key epochs of unacknowledged writes */
    long long last_dirty; /* server.dirty after the previous batch (or at construction) */
    int batch_readonly;   /* begin() saw a read-only batch; end() settles it */
    vectorcallfunc vectorcall;
    /* The last command names looked up in `readonly`, by content (see name_readonly). */
    struct {
        Py_ssize_t len; /* 0: an empty entry */
        int readonly;
        char name[NAME_CACHE_LEN];
    } names[NAME_CACHE];
    int names_next; /* the entry the next miss replaces */
} Processor;

static int
dirty_count(Processor *self, long long *out)
{
    /* An attribute lookup: reaching into server.__dict__ would materialise it, and the
       interpreter's attribute caches for the server's other attributes would then miss. */
    PyObject *v = PyObject_GetAttr(self->server, s_dirty);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *
call_slow(Processor *self, PyObject *client, PyObject *wrote)
{
    PyObject *args[2] = {client, wrote};
    return PyObject_Vectorcall(self->slow, args, 2, NULL);
}

/* end_batch's _commit_touched: every key touched in a batch that wrote is dirty, written in the
   epoch being filled (rules: kvserver.dirty). */
static int
commit_touched(Processor *self)
{
    PyObject *epoch = slot(self->protection, off_p_epoch, "epoch");
    if (epoch == NULL)
        return -1;
    Py_INCREF(epoch); /* a slot may be rebound by what a dict store runs (a key's __eq__) */
    Py_ssize_t n = PyList_GET_SIZE(self->touched);
    for (Py_ssize_t i = 0; i < n && i < PyList_GET_SIZE(self->touched); i++) {
        PyObject *pair = PyList_GET_ITEM(self->touched, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
            Py_DECREF(epoch);
            PyErr_SetString(PyExc_TypeError, "tracker.touched holds (DbState, key) pairs");
            return -1;
        }
        PyObject *state = PyTuple_GET_ITEM(pair, 0), *key = PyTuple_GET_ITEM(pair, 1);
        PyObject *dirty = slot(state, off_dirty, "dirty");
        PyObject *written = dirty ? slot(state, off_written, "written") : NULL;
        if (written == NULL || !PyDict_Check(dirty) || !PyDict_Check(written)) {
            Py_DECREF(epoch);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "DbState.dirty and written must be dicts");
            return -1;
        }
        Py_INCREF(state);
        Py_INCREF(key);
        int rc = PyDict_SetItem(dirty, key, Py_None);
        if (rc == 0 && self->reads) {
            written = slot(state, off_written, "written");
            rc = written == NULL ? -1 : PyDict_SetItem(written, key, epoch);
        }
        Py_DECREF(key);
        Py_DECREF(state);
        if (rc < 0) {
            Py_DECREF(epoch);
            return -1;
        }
    }
    Py_DECREF(epoch);
    return 0;
}

/* Protection.hold_until(wrote, read_epoch) (livepatch.replication.protection; keep in step): a new
   reference to the epoch the batch's replies wait for, 0 for none. */
static PyObject *
hold_until(Processor *self, int wrote, PyObject *read_epoch)
{
    PyObject *active = slot(self->protection, off_p_active, "active");
    if (active == NULL)
        return NULL;
    int on = PyObject_IsTrue(active);
    if (on <= 0)
        return on < 0 ? NULL : Py_NewRef(s_zero);
    if (self->full || wrote) {
        PyObject *epoch = slot(self->protection, off_p_epoch, "epoch");
        return epoch ? Py_NewRef(epoch) : NULL;
    }
    PyObject *acked = slot(self->protection, off_p_acked, "acked");
    if (acked == NULL)
        return NULL;
    int newer = PyObject_RichCompareBool(read_epoch, acked, Py_GT);
    if (newer < 0)
        return NULL;
    return Py_NewRef(newer ? read_epoch : s_zero);
}

static PyObject *
call_hold(Processor *self, PyObject *client, PyObject *epoch)
{
    PyObject *args[2] = {client, epoch};
    if (self->held == NULL)
        return PyObject_Vectorcall(self->hold, args, 2, NULL);
    /* PrimaryHost._hold (keep in step): a client that asked to be closed once its replies are out
       takes the Python path (it also notes the close); otherwise its output moves to `held`. */
    PyObject *close = PyObject_GetAttr(client, s_close_after_reply);
    if (close == NULL)
        return NULL;
    int closing = PyObject_IsTrue(close);
    Py_DECREF(close);
    if (closing)
        return closing < 0 ? NULL : PyObject_Vectorcall(self->hold, args, 2, NULL);
    PyObject *out = PyObject_GetAttr(client, s_out);
    if (out == NULL)
        return NULL;
    if (!PyList_CheckExact(out)) {
        Py_DECREF(out);
        return PyErr_Format(PyExc_TypeError, "client.out must be a list");
    }
    Py_ssize_t n = PyList_GET_SIZE(out);
    if (n) {
        PyObject *data = n == 1 ? Py_NewRef(PyList_GET_ITEM(out, 0)) : _PyBytes_Join(s_empty, out);
        int rc = data ? held_hold(self->held, client, epoch, data) : -1;
        Py_XDECREF(data);
        if (rc < 0 || PyList_SetSlice(out, 0, PyList_GET_SIZE(out), NULL) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    Py_DECREF(out);
    Py_RETURN_NONE;
}

/* client in held_by_conn, without a lookup while nothing is held (always under --protection none) */
static inline int
has_held(Processor *self, PyObject *client)
{
    return PyDict_GET_SIZE(self->held_by_conn) ? PyDict_Contains(self->held_by_conn, client) : 0;
}

/* 1 if `name` (bytes) is in self->readonly, 0 if not, -1 on error; by content, as the set does: a
   name seen lately is answered from self->names, without hashing it (the set is the Processor's
   own frozen copy: the answers never change). */
static int
name_readonly(Processor *self, PyObject *name)
{
    Py_ssize_t len = PyBytes_GET_SIZE(name);
    const char *s = PyBytes_AS_STRING(name);
    int cacheable = len > 0 && len <= NAME_CACHE_LEN;
    if (cacheable)
        for (int i = 0; i < NAME_CACHE; i++)
            if (self->names[i].len == len && memcmp(self->names[i].name, s, (size_t)len) == 0)
                return self->names[i].readonly;
    int in = PySet_Contains(self->readonly, name);
    if (in >= 0 && cacheable) {
        int i = self->names_next;
        self->names_next = (i + 1) % NAME_CACHE;
        self->names[i].len = len;
        self->names[i].readonly = in;
        memcpy(self->names[i].name, s, (size_t)len);
    }
    return in;
}

/* 1 if every command of the batch is a read-only one (by its name as sent), 0 if not, -1 on error. */
static int
all_readonly(Processor *self, PyObject *commands)
{
    if (!PyList_CheckExact(commands) || !PyAnySet_CheckExact(self->readonly))
        return 0;
    Py_ssize_t n = PyList_GET_SIZE(commands);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *argv = PyList_GET_ITEM(commands, i);
        if (!PyList_CheckExact(argv) || PyList_GET_SIZE(argv) == 0)
            return 0;
        PyObject *name = PyList_GET_ITEM(argv, 0);
        if (!PyBytes_CheckExact(name))
            return 0;
        int in = name_readonly(self, name);
        if (in <= 0)
            return in;
    }
    return n > 0;
}

/* The end of a read-only batch: no write, nothing touched by lookup; what remains is the decision
   on read_epoch and the replies held before (the common case's tail below, without server.dirty). */
static PyObject *
readonly_tail(Processor *self, PyObject *client)
{
    PyObject *read_epoch = slot(self->tracker, off_read_epoch, "read_epoch");
    if (read_epoch == NULL)
        return NULL;
    if (!PyLong_CheckExact(read_epoch))
        return PyErr_Format(PyExc_TypeError, "DirtyTracker.read_epoch must be an int");
    if (Py_SIZE(read_epoch) == 0 && !self->full) {
        int held = has_held(self, client);
        if (held <= 0)
            return held < 0 ? NULL : Py_NewRef(Py_None);
        return call_hold(self, client, s_zero);
    }
    PyObject *epoch = hold_until(self, 0, read_epoch); /* new reference, or NULL */
    if (epoch == NULL)
        return NULL;
    if (Py_SIZE(read_epoch) != 0) {
        Py_INCREF(s_zero);
        Py_SETREF(SLOT(self->tracker, off_read_epoch), s_zero);
    }
    int held = 1;
    if (Py_SIZE(epoch) == 0) {
        held = has_held(self, client);
        if (held < 0) {
            Py_DECREF(epoch);
            return NULL;
        }
    }
    PyObject *out = held ? call_hold(self, client, epoch) : Py_NewRef(Py_None);
    Py_DECREF(epoch);
    return out;
}

static PyObject *settle(Processor *self, PyObject *client, int readonly);

static PyObject *
processor_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Processor *self = (Processor *)callable;
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL)
        return PyErr_Format(PyExc_TypeError, "process(client, commands)");
    PyObject *client = args[0];
    int readonly = all_readonly(self, args[1]);
    if (readonly < 0)
        return NULL;
    PyObject *margs[3] = {self->server, client, args[1]};
    /* The class's function, through the type's attribute cache (a live patch that replaces it on
       the class, or its code, is seen at once): PyObject_VectorcallMethod's generic lookup also
       searches the instance's dict, ~400 instructions per batch. Nothing sets it per instance. */
    PyObject *func = _PyType_Lookup(Py_TYPE(self->server), s_process_commands); /* borrowed */
    PyObject *r;
    g_readonly_batch = readonly;
    if (func != NULL && PyFunction_Check(func)) {
        Py_INCREF(func);
        r = PyObject_Vectorcall(func, margs, 3, NULL);
        Py_DECREF(func);
    } else {
        r = PyObject_VectorcallMethod(s_process_commands, margs,
                                      3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    g_readonly_batch = 0;
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    return settle(self, client, readonly);
}

/* After a batch ran: the decision (the same for process and begin/end). */
static PyObject *
settle(Processor *self, PyObject *client, int readonly)
{
    long long after;
    if (readonly && PyList_GET_SIZE(self->touched) == 0) {
        PyObject *structural = slot(self->tracker, off_structural, "structural");
        if (structural == NULL)
            return NULL;
        if (structural != Py_True)
            return readonly_tail(self, client);
    }
    /* One read of server.dirty per batch: compared with its value after the previous batch. A
       change made between batches (cron's expiry, a snapshot resetting the count) makes this batch
       count as a write: its touched keys are shipped and its replies wait for the epoch. More
       than needed, never less. */
    if (dirty_count(self, &after) < 0)
        return NULL;
    int wrote = after != self->last_dirty;
    self->last_dirty = after;
    PyObject *structural = slot(self->tracker, off_structural, "structural");
    if (structural == NULL)
        return NULL;
    if (structural == Py_True)
        return call_slow(self, client, Py_True); /* FLUSHDB, SWAPDB: the Python rules */
    Py_ssize_t ntouched = PyList_GET_SIZE(self->touched);
    if (wrote && ntouched && commit_touched(self) < 0)
        return NULL;
    if (ntouched && PyList_SetSlice(self->touched, 0, PyList_GET_SIZE(self->touched), NULL) < 0)
        return NULL;
    PyObject *read_epoch = slot(self->tracker, off_read_epoch, "read_epoch");
    if (read_epoch == NULL)
        return NULL;
    if (!PyLong_CheckExact(read_epoch))
        return PyErr_Format(PyExc_TypeError, "DirtyTracker.read_epoch must be an int");
    if (!wrote && Py_SIZE(read_epoch) == 0 && !self->full) {
        /* The common case: a read of nothing unacknowledged. */
        int held = has_held(self, client);
        if (held <= 0)
            return held < 0 ? NULL : Py_NewRef(Py_None);
        return call_hold(self, client, s_zero);
    }
    /* Protection.hold_until(wrote, read_epoch), with end_batch's reset of read_epoch. */
    PyObject *epoch = hold_until(self, wrote, read_epoch); /* new reference, or NULL */
    if (epoch == NULL)
        return NULL;
    if (Py_SIZE(read_epoch) != 0) {
        Py_INCREF(s_zero);
        Py_SETREF(SLOT(self->tracker, off_read_epoch), s_zero);
    }
    int held = 1;
    if (Py_SIZE(epoch) == 0) {
        held = has_held(self, client);
        if (held < 0) {
            Py_DECREF(epoch);
            return NULL;
        }
    }
    PyObject *out = held ? call_hold(self, client, epoch) : Py_NewRef(Py_None);
    Py_DECREF(epoch);
    return out;
}

/* begin(commands) and end(client): process() in two halves, for a caller that runs the batch itself
   (the event loop: a Python call of process_commands from Python costs less than from C, where
   the interpreter is entered anew per batch). end() must follow every begin(), also when the
   batch raised (a try/finally): until then lookups note no key (a read-only batch). */
static PyObject *
processor_begin(Processor *self, PyObject *commands)
{
    int readonly = all_readonly(self, commands);
    if (readonly < 0)
        return NULL;
    self->batch_readonly = g_readonly_batch = readonly;
    Py_RETURN_NONE;
}

static PyObject *
processor_end(Processor *self, PyObject *client)
{
    int readonly = self->batch_readonly;
    self->batch_readonly = g_readonly_batch = 0;
    return settle(self, client, readonly);
}

static PyMethodDef processor_methods[] = {
    {"begin", (PyCFunction)processor_begin, METH_O,
     "begin(commands): before the batch runs (process's first half)"},
    {"end", (PyCFunction)processor_end, METH_O,
     "end(client): after the batch ran, also when it raised (process's second half)"},
    {NULL, NULL, 0, NULL},
};

static PyObject *
processor_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"server", "tracker", "held_by_conn", "slow", "hold",
                             "full",   "readonly", "held",       NULL};
    PyObject *server, *tracker, *held, *slow, *hold, *readonly = NULL, *held_obj = NULL;
    int full;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!OOp|OO:Processor", kwlist, &server, &tracker,
                                     &PyDict_Type, &held, &slow, &hold, &full, &readonly,
                                     &held_obj))
        return NULL;
    if (held_obj == Py_None)
        held_obj = NULL;
    if (held_obj != NULL) {
        if (held_offsets(held_obj) < 0)
            return NULL;
        if (SLOT(held_obj, off_h_by_conn) != held)
            return PyErr_Format(PyExc_ValueError, "held_by_conn must be held.by_conn");
    }
    if (readonly == NULL || readonly == Py_None)
        readonly = PyFrozenSet_New(NULL); /* no batch counts as read-only */
    else if (!PyAnySet_CheckExact(readonly))
        return PyErr_Format(PyExc_TypeError, "readonly must be a set of command names");
    else /* a copy that nothing changes: name_readonly remembers its answers */
        readonly = PyFrozenSet_New(readonly);
    if (readonly == NULL)
        return NULL;
    if (off_structural == 0)
        return PyErr_Format(PyExc_RuntimeError, "call methods() first");
    PyObject *protection = PyObject_GetAttrString(tracker, "protection");
    if (protection == NULL) {
        Py_DECREF(readonly);
        return NULL;
    }
    PyObject *reads_obj = PyObject_GetAttrString(tracker, "reads");
    int reads = reads_obj ? PyObject_IsTrue(reads_obj) : -1;
    Py_XDECREF(reads_obj);
    if (reads < 0) {
        Py_DECREF(protection);
        Py_DECREF(readonly);
        return NULL;
    }
    PyObject *ptype = (PyObject *)Py_TYPE(protection);
    if (slot_offset(ptype, "epoch", &off_p_epoch) < 0 ||
        slot_offset(ptype, "acked", &off_p_acked) < 0 ||
        slot_offset(ptype, "active", &off_p_active) < 0) {
        Py_DECREF(protection);
        Py_DECREF(readonly);
        return NULL;
    }
    PyObject *touched = PyObject_GetAttrString(tracker, "touched");
    if (touched == NULL || !PyList_Check(touched)) {
        Py_XDECREF(touched);
        Py_DECREF(protection);
        Py_DECREF(readonly);
        return touched ? PyErr_Format(PyExc_TypeError, "tracker.touched must be a list") : NULL;
    }
    Processor *self = (Processor *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(touched);
        Py_DECREF(protection);
        Py_DECREF(readonly);
        return NULL;
    }
    self->readonly = readonly;

    Py_INCREF(server);
    Py_INCREF(tracker);
    Py_INCREF(held);
    Py_INCREF(slow);
    Py_INCREF(hold);
    self->hold = hold;
    Py_XINCREF(held_obj);
    self->held = held_obj;
    self->protection = protection;
    self->server = server;
    self->tracker = tracker;
    self->touched = touched;
    self->held_by_conn = held;
    self->slow = slow;
    self->full = full;
    self->reads = reads;
    if (dirty_count(self, &self->last_dirty) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->vectorcall = processor_vectorcall;
    return (PyObject *)self;
}

static int
processor_traverse(Processor *self, visitproc visit, void *arg)
{
    Py_VISIT(self->server);
    Py_VISIT(self->tracker);
    Py_VISIT(self->touched);
    Py_VISIT(self->held_by_conn);
    Py_VISIT(self->slow);
    Py_VISIT(self->hold);
    Py_VISIT(self->held);
    Py_VISIT(self->protection);
    Py_VISIT(self->readonly);
    return 0;
}

static int
processor_clear(Processor *self)
{
    Py_CLEAR(self->server);
    Py_CLEAR(self->tracker);
    Py_CLEAR(self->touched);
    Py_CLEAR(self->held_by_conn);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->hold);
    Py_CLEAR(self->held);
    Py_CLEAR(self->protection);
    Py_CLEAR(self->readonly);
    return 0;
}

static void
processor_dealloc(Processor *self)
{
    PyObject_GC_UnTrack(self);
    processor_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ProcessorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "kvserver._dirtyfast.Processor",
    .tp_basicsize = sizeof(Processor),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Processor(server, tracker, held_by_conn, slow, hold, full, readonly=None, "
              "held=None): "
              "PrimaryHost.process in C.",
    .tp_new = processor_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Processor, vectorcall),
    .tp_methods = processor_methods,
    .tp_traverse = (traverseproc)processor_traverse,
    .tp_clear = (inquiry)processor_clear,
    .tp_dealloc = (destructor)processor_dealloc,
};

static PyMethodDef module_methods[] = {
    {"methods", methods, METH_VARARGS,
     "methods(cls, bases) -> {name: method descriptor of cls wrapping bases[name]}"},
    {"configure", configure, METH_O, "configure(tracker | None): the tracker the wrappers note in"},
    {"hold_replies", (PyCFunction)(void (*)(void))hold_replies, METH_FASTCALL,
     "hold_replies(held, conn, epoch, data): HeldReplies.hold in C"},
    {"release_held", (PyCFunction)(void (*)(void))release_held, METH_FASTCALL,
     "release_held(held, acked) -> [(conn, bytes)]: HeldReplies.release in C"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kvserver._dirtyfast",
    "Dirty tracking's per-request part in C (kvserver.dirty has the rules and the fallback).", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__dirtyfast(void)
{
#define INTERN(var, text)                                                                       \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                        \
        return NULL;
    INTERN(s_dirty, "dirty");
    INTERN(s_process_commands, "process_commands");
    INTERN(s_append, "append");
    INTERN(s_popleft, "popleft");
    INTERN(s_out, "out");
    INTERN(s_close_after_reply, "close_after_reply");
    if ((s_one = PyLong_FromLong(1)) == NULL || (s_empty = PyBytes_FromStringAndSize(NULL, 0)) == NULL)
        return NULL;
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL)
        return NULL;
    g_deque = PyObject_GetAttrString(collections, "deque");
    Py_DECREF(collections);
    if (g_deque == NULL || !PyType_Check(g_deque) ||
        (g_deque_append = PyObject_GetAttr(g_deque, s_append)) == NULL ||
        (g_deque_popleft = PyObject_GetAttr(g_deque, s_popleft)) == NULL)
        return NULL;
    if ((s_zero = PyLong_FromLong(0)) == NULL)
        return NULL;
    if (PyType_Ready(&ProcessorType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ProcessorType);
    if (PyModule_AddObject(m, "Processor", (PyObject *)&ProcessorType) < 0) {
        Py_DECREF(&ProcessorType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
