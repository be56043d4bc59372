/* kvserver._mverecord: the leader's recording of a validated update, in C (docs/validated-updates.md).
 *
 * While a validated update runs, kvserver.mve_support replaces ServerState.process_commands on the
 * server *instance* by a recorder. The common request (one request per read, nobody parked or
 * subscribed) is recorded here: call the class's process_commands, take what it appended to
 * client.out as the reply, and append the log record ("x1", client.id, server.now_ms, request, reply)
 * to the session's open batch, calling flush() when it holds flush_at records. That is exactly what
 * mve_support's pure-Python recorder does (its fallback, kept for a build without a compiler and as the
 * reference: tests/mve/test_recording_c.py holds the two to the same log); the C version saves the
 * Python frame of the wrapper, about half of what recording cost per request (docs/performance.md).
 *
 * Everything else goes to `slow(client, commands)`, the Python path: several requests in one read, a
 * parked client or a subscriber anywhere (a request may then wake or reach another connection, whose
 * output is part of the record). While the slow path runs, `depth` is 1 and a nested call (a woken
 * client's backlog run inside the push) goes straight to process_commands: it is part of the request
 * that woke it.
 *
 * The log format is the session's (livepatch.mve.channel), unchanged; encode_frame (below) writes a
 * batch's frame without pickle's Pickler.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *process;    /* ServerState.process_commands (the class's function) */
    PyObject *server;     /* the ServerState instance */
    PyObject *pending;    /* the session's open batch (a list that stays the same object) */
    PyObject *flush;      /* the session's flush() */
    PyObject *blocked;    /* server.blocked_clients (a dict) */
    PyObject *subscribed; /* server.pubsub.by_client (a dict) */
    PyObject *slow;       /* slow(client, commands): the Python path */
    Py_ssize_t flush_at;
    int depth;
    vectorcallfunc vectorcall;
} Recorder;

static PyObject *str_out, *str_id, *str_now_ms, *str_x1, *empty_join;

static int
nonempty(PyObject *mapping)
{
    if (PyDict_CheckExact(mapping))
        return PyDict_GET_SIZE(mapping) != 0;
    return PyObject_IsTrue(mapping);
}

static PyObject *
call_process(Recorder *self, PyObject *client, PyObject *commands)
{
    PyObject *args[3] = {self->server, client, commands};
    return PyObject_Vectorcall(self->process, args, 3, NULL);
}

/* What process_commands appended to `out` from `start` on: the item itself when it is one. */
static PyObject *
reply_since(PyObject *out, Py_ssize_t start)
{
    Py_ssize_t end = PyList_GET_SIZE(out);
    if (end == start + 1) {
        PyObject *item = PyList_GET_ITEM(out, start);
        Py_INCREF(item);
        return item;
    }
    PyObject *part = PyList_GetSlice(out, start, end < start ? start : end);
    if (part == NULL)
        return NULL;
    PyObject *joined = PyObject_CallOneArg(empty_join, part);
    Py_DECREF(part);
    return joined;
}

static PyObject *
recorder_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Recorder *self = (Recorder *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "recorder(client, commands)");
        return NULL;
    }
    PyObject *client = args[0], *commands = args[1];
    if (self->depth)
        return call_process(self, client, commands);
    int busy = 0;
    if (!PyList_CheckExact(commands) || PyList_GET_SIZE(commands) != 1)
        busy = 1;
    else if ((busy = nonempty(self->blocked)) == 0)
        busy = nonempty(self->subscribed);
    if (busy < 0)
        return NULL;
    if (busy) {
        PyObject *slow_args[2] = {client, commands};
        return PyObject_Vectorcall(self->slow, slow_args, 2, NULL);
    }
    PyObject *out = PyObject_GetAttr(client, str_out);
    if (out == NULL)
        return NULL;
    if (!PyList_CheckExact(out)) {
        Py_DECREF(out);
        PyObject *slow_args[2] = {client, commands};
        return PyObject_Vectorcall(self->slow, slow_args, 2, NULL);
    }
    PyObject *request = PyList_GET_ITEM(commands, 0);
    Py_INCREF(request);
    Py_ssize_t start = PyList_GET_SIZE(out);
    PyObject *done = call_process(self, client, commands);
    if (done == NULL)
        goto fail_request;
    Py_DECREF(done);
    PyObject *reply = reply_since(out, start);
    if (reply == NULL)
        goto fail_request;
    Py_DECREF(out);
    PyObject *cid = PyObject_GetAttr(client, str_id);
    PyObject *now = cid ? PyObject_GetAttr(self->server, str_now_ms) : NULL;
    if (now == NULL) {
        Py_XDECREF(cid);
        Py_DECREF(reply);
        Py_DECREF(request);
        return NULL;
    }
    PyObject *record = PyTuple_New(5);
    if (record == NULL) {
        Py_DECREF(cid);
        Py_DECREF(now);
        Py_DECREF(reply);
        Py_DECREF(request);
        return NULL;
    }
    Py_INCREF(str_x1);
    PyTuple_SET_ITEM(record, 0, str_x1);
    PyTuple_SET_ITEM(record, 1, cid);
    PyTuple_SET_ITEM(record, 2, now);
    PyTuple_SET_ITEM(record, 3, request);
    PyTuple_SET_ITEM(record, 4, reply);
    int failed = PyList_Append(self->pending, record);
    Py_DECREF(record);
    if (failed)
        return NULL;
    if (PyList_GET_SIZE(self->pending) >= self->flush_at) {
        PyObject *r = PyObject_CallNoArgs(self->flush);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;

fail_request:
    Py_DECREF(out);
    Py_DECREF(request);
    return NULL;
}

static PyObject *
recorder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"process", "server", "pending", "flush", "flush_at",
                             "blocked", "subscribed", "slow", NULL};
    PyObject *process, *server, *pending, *flush, *blocked, *subscribed, *slow;
    Py_ssize_t flush_at;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!OnOOO:Recorder", kwlist, &process, &server,
                                     &PyList_Type, &pending, &flush, &flush_at, &blocked,
                                     &subscribed, &slow))
        return NULL;
    Recorder *self = (Recorder *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_INCREF(process);
    self->process = process;
    Py_INCREF(server);
    self->server = server;
    Py_INCREF(pending);
    self->pending = pending;
    Py_INCREF(flush);
    self->flush = flush;
    Py_INCREF(blocked);
    self->blocked = blocked;
    Py_INCREF(subscribed);
    self->subscribed = subscribed;
    Py_INCREF(slow);
    self->slow = slow;
    self->flush_at = flush_at;
    self->depth = 0;
    self->vectorcall = recorder_vectorcall;
    return (PyObject *)self;
}

static int
recorder_traverse(Recorder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->process);
    Py_VISIT(self->server);
    Py_VISIT(self->pending);
    Py_VISIT(self->flush);
    Py_VISIT(self->blocked);
    Py_VISIT(self->subscribed);
    Py_VISIT(self->slow);
    return 0;
}

static int
recorder_clear(Recorder *self)
{
    Py_CLEAR(self->process);
    Py_CLEAR(self->server);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->flush);
    Py_CLEAR(self->blocked);
    Py_CLEAR(self->subscribed);
    Py_CLEAR(self->slow);
    return 0;
}

static void
recorder_dealloc(Recorder *self)
{
    PyObject_GC_UnTrack(self);
    recorder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef recorder_members[] = {
    {"depth", T_INT, offsetof(Recorder, depth), 0,
     "1 while the Python path runs a read: nested calls are part of its request"},
    {"flush_at", T_PYSSIZET, offsetof(Recorder, flush_at), READONLY, NULL},
    {NULL},
};

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kvserver._mverecord.Recorder",
    .tp_basicsize = sizeof(Recorder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "process_commands while a validated update records (see the module's comment)",
    .tp_new = recorder_new,
    .tp_dealloc = (destructor)recorder_dealloc,
    .tp_traverse = (traverseproc)recorder_traverse,
    .tp_clear = (inquiry)recorder_clear,
    .tp_vectorcall_offset = offsetof(Recorder, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_members = recorder_members,
};


/* ------------------------------------------------------------------------------------------------
 * encode_frame(records) -> bytes | None: the log frame of one batch, as livepatch.mve.channel.encode
 * makes it (a 4-byte big-endian length, then a pickle of the list), written directly: pickle's own
 * Pickler spent about 2,700 instructions per request record on its memo and its general paths. The
 * bytes are a valid pickle (protocol 5 opcodes, no memo: a shared object is written twice) that
 * pickle.loads turns into the same list; the follower reads them unchanged. Only what log records are
 * made of is written here (str, bytes, int within 64 bits, None, bool, list, tuple); anything else in
 * the batch (the hand-over marker's state) returns None and the caller pickles the batch as before.
 */
typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int
buf_reserve(Buf *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline void
put_le(char *p, unsigned long long v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (char)((v >> (8 * i)) & 0xff);
}

/* 1 written, 0 not a kind written here (the caller falls back to pickle), -1 error. */
static int
put_object(Buf *b, PyObject *obj, int depth)
{
    if (depth > 16)
        return 0;
    if (PyBytes_CheckExact(obj)) {
        Py_ssize_t n = PyBytes_GET_SIZE(obj);
        if (n > 0xffffffffLL)
            return 0;
        if (buf_reserve(b, n + 5) < 0)
            return -1;
        if (n < 256) {
            b->data[b->len++] = 'C'; /* SHORT_BINBYTES */
            b->data[b->len++] = (char)n;
        }
        else {
            b->data[b->len++] = 'B'; /* BINBYTES */
            put_le(b->data + b->len, (unsigned long long)n, 4);
            b->len += 4;
        }
        memcpy(b->data + b->len, PyBytes_AS_STRING(obj), n);
        b->len += n;
        return 1;
    }
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow)
            return 0;
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (buf_reserve(b, 10) < 0)
            return -1;
        if (v >= 0 && v < 256) {
            b->data[b->len++] = 'K'; /* BININT1 */
            b->data[b->len++] = (char)v;
        }
        else if (v >= 0 && v < 65536) {
            b->data[b->len++] = 'M'; /* BININT2 */
            put_le(b->data + b->len, (unsigned long long)v, 2);
            b->len += 2;
        }
        else if (v >= INT32_MIN && v <= INT32_MAX) {
            b->data[b->len++] = 'J'; /* BININT */
            put_le(b->data + b->len, (unsigned long long)v, 4);
            b->len += 4;
        }
        else {
            /* LONG1: the fewest little-endian two's-complement bytes that hold v */
            int n = 1;
            while (n < 8) {
                long long lo = -(1LL << (8 * n - 1)), hi = (1LL << (8 * n - 1)) - 1;
                if (v >= lo && v <= hi)
                    break;
                n++;
            }
            b->data[b->len++] = (char)0x8a;
            b->data[b->len++] = (char)n;
            put_le(b->data + b->len, (unsigned long long)v, n);
            b->len += n;
        }
        return 1;
    }
    if (PyUnicode_CheckExact(obj)) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &n);
        if (utf8 == NULL) { /* lone surrogates: pickle's own "surrogatepass" handles them */
            PyErr_Clear();
            return 0;
        }
        if (n > 0xffffffffLL)
            return 0;
        if (buf_reserve(b, n + 5) < 0)
            return -1;
        if (n < 256) {
            b->data[b->len++] = (char)0x8c; /* SHORT_BINUNICODE */
            b->data[b->len++] = (char)n;
        }
        else {
            b->data[b->len++] = 'X'; /* BINUNICODE */
            put_le(b->data + b->len, (unsigned long long)n, 4);
            b->len += 4;
        }
        memcpy(b->data + b->len, utf8, n);
        b->len += n;
        return 1;
    }
    if (obj == Py_None || obj == Py_True || obj == Py_False) {
        if (buf_reserve(b, 1) < 0)
            return -1;
        b->data[b->len++] = obj == Py_None ? 'N' : (obj == Py_True ? (char)0x88 : (char)0x89);
        return 1;
    }
    int is_list = PyList_CheckExact(obj);
    if (is_list || PyTuple_CheckExact(obj)) {
        Py_ssize_t n = is_list ? PyList_GET_SIZE(obj) : PyTuple_GET_SIZE(obj);
        if (buf_reserve(b, 2) < 0)
            return -1;
        if (is_list) {
            b->data[b->len++] = ']'; /* EMPTY_LIST */
            if (n == 0)
                return 1;
        }
        else if (n == 0) {
            b->data[b->len++] = ')'; /* EMPTY_TUPLE */
            return 1;
        }
        b->data[b->len++] = '('; /* MARK */
        for (Py_ssize_t i = 0; i < n; i++) {
            /* A list may change under a callee only through Python code: none runs here. */
            PyObject *item = is_list ? PyList_GET_ITEM(obj, i) : PyTuple_GET_ITEM(obj, i);
            int r = put_object(b, item, depth + 1);
            if (r <= 0)
                return r;
        }
        if (buf_reserve(b, 1) < 0)
            return -1;
        b->data[b->len++] = is_list ? 'e' : 't'; /* APPENDS / TUPLE */
        return 1;
    }
    return 0;
}

static PyObject *
encode_frame(PyObject *module, PyObject *records)
{
    if (!PyList_CheckExact(records)) {
        PyErr_SetString(PyExc_TypeError, "encode_frame(records: list)");
        return NULL;
    }
    Buf b = {NULL, 0, 0};
    if (buf_reserve(&b, 64 + 64 * PyList_GET_SIZE(records)) < 0)
        return NULL;
    b.len = 4; /* the frame's length, filled in below */
    b.data[b.len++] = (char)0x80; /* PROTO 5 */
    b.data[b.len++] = 5;
    int r = put_object(&b, records, 0);
    if (r <= 0) {
        PyMem_Free(b.data);
        if (r < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (buf_reserve(&b, 1) < 0) {
        PyMem_Free(b.data);
        return NULL;
    }
    b.data[b.len++] = '.'; /* STOP */
    unsigned long long size = (unsigned long long)(b.len - 4);
    if (size > 0xffffffffULL) {
        PyMem_Free(b.data);
        Py_RETURN_NONE;
    }
    for (int i = 0; i < 4; i++)
        b.data[i] = (char)((size >> (8 * (3 - i))) & 0xff);
    PyObject *frame = PyBytes_FromStringAndSize(b.data, b.len);
    PyMem_Free(b.data);
    return frame;
}

static PyMethodDef methods[] = {
    {"encode_frame", encode_frame, METH_O,
     "The log frame of a batch of records (length + pickle), or None if it holds other objects."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "kvserver._mverecord",
    .m_doc = "The leader's recording of a validated update (see _mverecord.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__mverecord(void)
{
    str_out = PyUnicode_InternFromString("out");
    str_id = PyUnicode_InternFromString("id");
    str_now_ms = PyUnicode_InternFromString("now_ms");
    str_x1 = PyUnicode_InternFromString("x1");
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    if (!str_out || !str_id || !str_now_ms || !str_x1 || !empty)
        return NULL;
    empty_join = PyObject_GetAttrString(empty, "join");
    Py_DECREF(empty);
    if (empty_join == NULL || PyType_Ready(&RecorderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RecorderType);
    if (PyModule_AddObject(m, "Recorder", (PyObject *)&RecorderType) < 0) {
        Py_DECREF(&RecorderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
