/* sqlserver._pgfast: the prepared-SELECT fast path in C, run without the GIL (optional; without it
 * sqlserver serves everything in Python, with the same replies, only slower).
 *
 * What it does. A `Native` belongs to one session and wraps that session's own SQLite connection
 * (the sqlite3* inside its Python sqlite3.Connection). The session registers prepared statements it
 * has already served once in Python (sqlserver/native.py says which qualify: a read-only SELECT of one
 * SQLite statement whose parameters are integers (text or binary format) or text and whose result
 * columns are integers or text, sent in text format). Then, for the exact libpq burst Bind(unnamed portal)/[Describe portal]/
 * Execute(all rows)/Sync of such a statement -- the burst sqlserver/fastpath.py recognises -- this
 * file parses the burst, binds the parameters, steps SQLite, encodes BindComplete, [RowDescription],
 * the DataRows, CommandComplete and ReadyForQuery('I'), all without the GIL:
 *
 *   serve(fd)  recv on the connection's socket, answer a burst it can, send the reply: one GIL
 *              release per transaction (thread-per-connection). Returns None when it answered, the
 *              bytes it received otherwise (b"" at end of file); recv's errors raise OSError as
 *              socket.recv does (BlockingIOError when SO_RCVTIMEO expired).
 *   run(data)  the same for bytes the caller already read (Session.receive, both policies): the reply,
 *              or None.
 *
 * Why the replies are the general path's, byte for byte: it declines (None / the received bytes,
 * before sending anything) whenever anything differs from the registered plan -- another message,
 * a named portal, a row limit, a binary result format, a text parameter that is not a plain decimal
 * (or not ASCII text), a binary parameter that is not an integer of its type's size, a value whose SQLite type is not the one its encoder was planned for, any SQLite
 * error, an open transaction. The session's Python code then runs the same bytes; only read-only
 * statements are registered, so a declined statement that already stepped can safely run again.
 *
 * Why live patches still take effect. The functions this file stands in for (Session._fast, the
 * encoders, Executor.run, ... -- sqlserver/native.py lists them) are registered as guards with the
 * code object each had at start. Every call first compares each guard's current __code__ with it
 * (the runtime patches functions by replacing __code__, for global and local patches alike): once a
 * patch replaced any of them, nothing is served here and the patched Python code runs. The policy
 * decisions (quiescence points, transactions, the write lock) stay in Python: the fast path serves
 * only autocommit reads, with the GIL released exactly where sqlite3 releases it, and returns to the
 * Python request loop after every request.
 *
 * The sqlite3* handle: CPython's sqlite3.Connection struct starts with PyObject_HEAD followed by the
 * `sqlite3 *db` (3.8 to 3.13); native.py checks the type and then asks SQLite for the database file
 * name through this pointer and compares it with PRAGMA database_list before using it. SQLite's
 * functions are looked up (dlsym) in the _sqlite3 extension module's own library scope, so this file
 * calls the very SQLite library that owns the handle and needs no sqlite3.h to build.
 *
 * Concurrency: a Native is used by the thread serving its session; SQLite's serialized mode guards
 * the handle against the one other caller: sqlite3_interrupt from a CancelRequest, after which this
 * path declines with `interrupted` set and Python answers the burst as cancelled (57014).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

/* ------------------------------------------------------------------------------- SQLite, by hand */
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
#define SQLITE_OK 0
#define SQLITE_INTERRUPT 9
#define SQLITE_ROW 100
#define SQLITE_DONE 101
#define SQLITE_INTEGER 1
#define SQLITE_TEXT 3
#define SQLITE_NULL 5

static int (*p_prepare_v2)(sqlite3 *, const char *, int, sqlite3_stmt **, const char **);
static int (*p_step)(sqlite3_stmt *);
static int (*p_reset)(sqlite3_stmt *);
static int (*p_clear_bindings)(sqlite3_stmt *);
static int (*p_finalize)(sqlite3_stmt *);
static int (*p_bind_int64)(sqlite3_stmt *, int, long long);
static int (*p_bind_text)(sqlite3_stmt *, int, const char *, int, void (*)(void *));
static int (*p_bind_null)(sqlite3_stmt *, int);
static int (*p_bind_parameter_count)(sqlite3_stmt *);
static int (*p_column_count)(sqlite3_stmt *);
static int (*p_column_type)(sqlite3_stmt *, int);
static long long (*p_column_int64)(sqlite3_stmt *, int);
static const unsigned char *(*p_column_text)(sqlite3_stmt *, int);
static int (*p_column_bytes)(sqlite3_stmt *, int);
static int (*p_stmt_readonly)(sqlite3_stmt *);
static int (*p_get_autocommit)(sqlite3 *);
static const char *(*p_db_filename)(sqlite3 *, const char *);
static int loaded = 0;

/* ------------------------------------------------------------------------------- plans */
enum { P_INT = 1, P_TEXT = 2 };     /* parameter kinds */
enum { E_INT = 1, E_ANY = 2 };      /* encoder kinds: _text_int, _text_any */
#define MAX_ENTRIES 64
#define MAX_OUT (1 << 20)           /* a bigger reply is left to Python */

typedef struct {
    char *name;
    Py_ssize_t name_len;
    sqlite3_stmt *stmt;
    int nparams;
    unsigned char *pkinds;   /* text format: P_INT, P_TEXT */
    unsigned char *bkinds;   /* binary format: 2, 4, 8 (a big-endian integer of that size), 0: decline */
    int ncols;
    unsigned char *ekinds;
    char *desc;
    Py_ssize_t desc_len;
    char *tag;
    Py_ssize_t tag_len;
} Entry;

typedef struct {
    PyObject_HEAD
    PyObject *conn;     /* the sqlite3.Connection (kept alive while we hold its handle) */
    sqlite3 *db;
    Entry entries[MAX_ENTRIES];
    int nentries;
    int enabled;        /* the session is READY, status I, nothing buffered (set by Python) */
    int interrupted;    /* a CancelRequest stopped the last step: Python answers it (57014) */
    char *in;
    Py_ssize_t in_cap;
    char *out;
    Py_ssize_t out_len, out_cap;
    unsigned long long served;
} Native;

static PyObject **guard_funcs = NULL;
static PyObject **guard_codes = NULL;
static Py_ssize_t nguards = 0;

static int
guards_hold(void)
{
    if (nguards == 0) {
        return 0;  /* never armed: serve nothing */
    }
    for (Py_ssize_t i = 0; i < nguards; i++) {
        if (PyFunction_GET_CODE(guard_funcs[i]) != guard_codes[i]) {
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------------- output buffer */
static int
reserve(Native *self, Py_ssize_t more)
{
    Py_ssize_t need = self->out_len + more;
    if (need <= self->out_cap) {
        return 1;
    }
    if (need > MAX_OUT) {
        return 0;
    }
    Py_ssize_t cap = self->out_cap ? self->out_cap : 4096;
    while (cap < need) {
        cap *= 2;
    }
    char *p = realloc(self->out, (size_t)cap);  /* plain realloc: called without the GIL */
    if (p == NULL) {
        return 0;
    }
    self->out = p;
    self->out_cap = cap;
    return 1;
}

static void
put32(char *p, unsigned int v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static unsigned int
get32(const unsigned char *p)
{
    return ((unsigned int)p[0] << 24) | ((unsigned int)p[1] << 16) | ((unsigned int)p[2] << 8) | p[3];
}

static unsigned int
get16(const unsigned char *p)
{
    return ((unsigned int)p[0] << 8) | p[1];
}

/* decimal of v into buf (at least 21 bytes); returns its length */
static int
fmt_int(char *buf, long long v)
{
    char tmp[24];
    int n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    int len = 0;
    if (v < 0) {
        buf[len++] = '-';
    }
    while (n) {
        buf[len++] = tmp[--n];
    }
    return len;
}

/* ------------------------------------------------------------------------------- the burst */
static const unsigned char TAIL_DESCRIBE[] = {
    'D', 0, 0, 0, 6, 'P', 0,
    'E', 0, 0, 0, 9, 0, 0, 0, 0, 0,
    'S', 0, 0, 0, 4};
#define TAIL_LEN 15  /* Execute + Sync */

static int
is_ascii(const unsigned char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] & 0x80) {
            return 0;
        }
    }
    return 1;
}

/* Parse a text-format integer the way the general path's int() would, for the plain form only:
 * an optional sign and 1-18 digits. Anything else (blanks, underscores, more digits) declines. */
static int
parse_int(const unsigned char *p, Py_ssize_t n, long long *out)
{
    Py_ssize_t i = 0;
    int neg = 0;
    if (n > 0 && (p[0] == '-' || p[0] == '+')) {
        neg = p[0] == '-';
        i = 1;
    }
    if (n - i < 1 || n - i > 18) {
        return 0;
    }
    long long v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
        v = v * 10 + (p[i] - '0');
    }
    *out = neg ? -v : v;
    return 1;
}

/* Answer the burst in data[0:n] into self->out. Returns 1 when answered, 0 to decline. Called with
 * or without the GIL: it touches only C memory and SQLite. */
static int
answer(Native *self, const unsigned char *data, Py_ssize_t n)
{
    if (n < 20 || data[0] != 'B' || data[5] != 0 || !self->enabled) {
        return 0;
    }
    Py_ssize_t end = 1 + (Py_ssize_t)get32(data + 1);
    if (end < 13 || end > n) {  /* 13: the shortest Bind (empty names, no formats, no parameters) */
        return 0;
    }
    Py_ssize_t tail = n - end;
    int describe;
    if (tail == (Py_ssize_t)sizeof(TAIL_DESCRIBE) && memcmp(data + end, TAIL_DESCRIBE, sizeof(TAIL_DESCRIBE)) == 0) {
        describe = 1;
    }
    else if (tail == TAIL_LEN && memcmp(data + end, TAIL_DESCRIBE + 7, TAIL_LEN) == 0) {
        describe = 0;
    }
    else {
        return 0;
    }
    /* statement name */
    Py_ssize_t pos = 6;
    const unsigned char *z = memchr(data + pos, 0, (size_t)(end - pos));
    if (z == NULL) {
        return 0;
    }
    Py_ssize_t name_len = (z - data) - pos;
    Entry *e = NULL;
    for (int i = 0; i < self->nentries; i++) {
        Entry *c = &self->entries[i];
        if (c->name_len == name_len && memcmp(c->name, data + pos, (size_t)name_len) == 0) {
            e = c;
            break;
        }
    }
    if (e == NULL) {
        return 0;
    }
    pos += name_len + 1;
    /* parameter formats: none (all text), one for all, or one each; text (0) or binary (1) */
    if (end - pos < 2) {
        return 0;
    }
    unsigned int nf = get16(data + pos);
    pos += 2;
    if (end - pos < 2 * (Py_ssize_t)nf) {
        return 0;
    }
    const unsigned char *fmts = data + pos;
    for (unsigned int i = 0; i < nf; i++) {
        if (get16(fmts + 2 * i) > 1) {
            return 0;
        }
    }
    pos += 2 * nf;
    if (end - pos < 2) {
        return 0;
    }
    unsigned int np = get16(data + pos);
    pos += 2;
    if ((int)np != e->nparams || (nf > 1 && nf != np)) {
        return 0;
    }
    if (!p_get_autocommit(self->db)) {
        return 0;  /* a transaction is open on the handle: the general path decides */
    }
    sqlite3_stmt *st = e->stmt;
    int ok = 1;
    for (unsigned int i = 0; i < np && ok; i++) {
        if (end - pos < 4) {
            ok = 0;
            break;
        }
        int len = (int)get32(data + pos);
        pos += 4;
        if (len < -1) {
            ok = 0;  /* not a valid length: the Python paths decide what to answer */
            break;
        }
        if (len == -1) {
            ok = p_bind_null(st, (int)i + 1) == SQLITE_OK;
            continue;
        }
        if (end - pos < len) {
            ok = 0;
            break;
        }
        const unsigned char *v = data + pos;
        pos += len;
        unsigned int binary = nf == 0 ? 0 : get16(fmts + 2 * (nf == 1 ? 0 : i));
        if (binary) {
            long long x;
            if (e->bkinds[i] == 0 || len != e->bkinds[i]) {
                ok = 0;  /* not an integer parameter, or a size its decoder would refuse */
                break;
            }
            if (len == 2) {
                x = (short)get16(v);
            }
            else if (len == 4) {
                x = (int)get32(v);
            }
            else {
                x = (long long)(((unsigned long long)get32(v) << 32) | get32(v + 4));
            }
            ok = p_bind_int64(st, (int)i + 1, x) == SQLITE_OK;
        }
        else if (e->pkinds[i] == P_INT) {
            long long x;
            ok = parse_int(v, len, &x) && p_bind_int64(st, (int)i + 1, x) == SQLITE_OK;
        }
        else {
            ok = is_ascii(v, len) && p_bind_text(st, (int)i + 1, (const char *)v, len, NULL) == SQLITE_OK;
        }
    }
    if (ok) {
        /* result formats: none, or all text */
        if (end - pos < 2) {
            ok = 0;
        }
        else {
            unsigned int nr = get16(data + pos);
            pos += 2;
            if (end - pos != 2 * (Py_ssize_t)nr || (nr > 1 && (int)nr != e->ncols)) {
                ok = 0;
            }
            for (unsigned int i = 0; ok && i < nr; i++) {
                if (get16(data + pos + 2 * i) != 0) {
                    ok = 0;
                }
            }
        }
    }
    if (!ok) {
        p_clear_bindings(st);
        return 0;
    }
    /* run it */
    self->out_len = 0;
    if (!reserve(self, 5 + e->desc_len)) {
        p_clear_bindings(st);
        return 0;
    }
    memcpy(self->out, "2\0\0\0\4", 5);
    self->out_len = 5;
    if (describe) {
        memcpy(self->out + 5, e->desc, (size_t)e->desc_len);
        self->out_len += e->desc_len;
    }
    long long rows = 0;
    int rc;
    const int ncols = e->ncols;
    while ((rc = p_step(st)) == SQLITE_ROW) {
        Py_ssize_t start = self->out_len;
        if (!reserve(self, 7 + 4 * (Py_ssize_t)ncols)) {
            ok = 0;
            break;
        }
        self->out[start] = 'D';
        self->out[start + 5] = (char)(ncols >> 8);
        self->out[start + 6] = (char)ncols;
        self->out_len += 7;
        for (int c = 0; c < ncols && ok; c++) {
            int t = p_column_type(st, c);
            if (t == SQLITE_NULL) {
                if (!reserve(self, 4)) {
                    ok = 0;
                    break;
                }
                put32(self->out + self->out_len, 0xFFFFFFFFu);
                self->out_len += 4;
            }
            else if (t == SQLITE_INTEGER) {
                if (!reserve(self, 4 + 21)) {
                    ok = 0;
                    break;
                }
                int len = fmt_int(self->out + self->out_len + 4, p_column_int64(st, c));
                put32(self->out + self->out_len, (unsigned int)len);
                self->out_len += 4 + len;
            }
            else if (t == SQLITE_TEXT && e->ekinds[c] == E_ANY) {
                const unsigned char *s = p_column_text(st, c);
                int len = p_column_bytes(st, c);
                if (s == NULL || !is_ascii(s, len) || !reserve(self, 4 + (Py_ssize_t)len)) {
                    ok = 0;
                    break;
                }
                put32(self->out + self->out_len, (unsigned int)len);
                memcpy(self->out + self->out_len + 4, s, (size_t)len);
                self->out_len += 4 + len;
            }
            else {
                ok = 0;  /* a float, a blob, text in an integer column: the Python encoders decide */
            }
        }
        if (!ok) {
            break;
        }
        put32(self->out + start + 1, (unsigned int)(self->out_len - start - 1));
        rows++;
    }
    p_reset(st);
    p_clear_bindings(st);
    if (ok && rc == SQLITE_INTERRUPT) {
        /* Declining would let Python run the statement again, uninterrupted: the cancel would be
         * lost. The flag makes Python answer this burst as cancelled instead (Session.receive). */
        self->interrupted = 1;
        return 0;
    }
    if (!ok || rc != SQLITE_DONE) {
        return 0;
    }
    char num[24];
    int nlen = fmt_int(num, rows);
    Py_ssize_t clen = 4 + e->tag_len + 1 + nlen + 1;
    if (!reserve(self, 1 + clen + 6)) {
        return 0;
    }
    char *o = self->out + self->out_len;
    o[0] = 'C';
    put32(o + 1, (unsigned int)clen);
    memcpy(o + 5, e->tag, (size_t)e->tag_len);
    o[5 + e->tag_len] = ' ';
    memcpy(o + 6 + e->tag_len, num, (size_t)nlen);
    o[6 + e->tag_len + nlen] = 0;
    o += 1 + clen;
    memcpy(o, "Z\0\0\0\5I", 6);
    self->out_len += 1 + clen + 6;
    self->served++;
    return 1;
}

/* ------------------------------------------------------------------------------- Native methods */
static void
entry_clear(Entry *e)
{
    if (e->stmt != NULL) {
        p_finalize(e->stmt);
    }
    PyMem_Free(e->name);
    PyMem_Free(e->pkinds);
    PyMem_Free(e->bkinds);
    PyMem_Free(e->ekinds);
    PyMem_Free(e->desc);
    PyMem_Free(e->tag);
    memset(e, 0, sizeof(*e));
}

static int
forget_name(Native *self, const char *name, Py_ssize_t len)
{
    for (int i = 0; i < self->nentries; i++) {
        Entry *e = &self->entries[i];
        if (e->name_len == len && memcmp(e->name, name, (size_t)len) == 0) {
            entry_clear(e);
            self->entries[i] = self->entries[self->nentries - 1];
            memset(&self->entries[self->nentries - 1], 0, sizeof(Entry));
            self->nentries--;
            return 1;
        }
    }
    return 0;
}

static int
Native_init(Native *self, PyObject *args, PyObject *kwds)
{
    PyObject *conn;
    if (!PyArg_ParseTuple(args, "O", &conn)) {
        return -1;
    }
    if (!loaded) {
        PyErr_SetString(PyExc_RuntimeError, "sqlserver._pgfast: SQLite is not loaded (call load())");
        return -1;
    }
    Py_INCREF(conn);
    Py_XSETREF(self->conn, conn);
    /* CPython's pysqlite_Connection: PyObject_HEAD, then the handle (native.py checked the type) */
    self->db = *(sqlite3 **)((char *)conn + sizeof(PyObject));
    if (self->in == NULL) {
        self->in_cap = 64 * 1024;
        self->in = PyMem_RawMalloc((size_t)self->in_cap);
        if (self->in == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static void
Native_dealloc(Native *self)
{
    for (int i = 0; i < self->nentries; i++) {
        entry_clear(&self->entries[i]);
    }
    self->nentries = 0;
    PyMem_RawFree(self->in);
    free(self->out);
    Py_XDECREF(self->conn);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Native_filename(Native *self, PyObject *Py_UNUSED(ignored))
{
    if (self->db == NULL) {
        Py_RETURN_NONE;
    }
    const char *f = p_db_filename(self->db, "main");
    if (f == NULL) {
        Py_RETURN_NONE;
    }
    return PyUnicode_DecodeFSDefault(f);
}

static char *
dup_bytes(PyObject *b, Py_ssize_t *len)
{
    char *s;
    if (PyBytes_AsStringAndSize(b, &s, len) < 0) {
        return NULL;
    }
    char *d = PyMem_Malloc((size_t)(*len > 0 ? *len : 1));
    if (d == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(d, s, (size_t)*len);
    return d;
}

/* register(name, sql, pkinds, bkinds, ekinds, desc, tag: bytes) -> bool (False: not servable) */
static PyObject *
Native_register(Native *self, PyObject *args)
{
    PyObject *name, *sql, *pk, *bk, *ek, *desc, *tag;
    if (!PyArg_ParseTuple(args, "SSSSSSS", &name, &sql, &pk, &bk, &ek, &desc, &tag)) {
        return NULL;
    }
    if (PyBytes_GET_SIZE(bk) != PyBytes_GET_SIZE(pk)) {
        PyErr_SetString(PyExc_ValueError, "one binary kind per parameter");
        return NULL;
    }
    forget_name(self, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
    if (self->nentries >= MAX_ENTRIES || self->db == NULL) {
        Py_RETURN_FALSE;
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = p_prepare_v2(self->db, PyBytes_AS_STRING(sql), (int)PyBytes_GET_SIZE(sql), &st, &tail);
    if (rc != SQLITE_OK || st == NULL) {
        if (st != NULL) {
            p_finalize(st);
        }
        Py_RETURN_FALSE;
    }
    while (tail != NULL && (*tail == ' ' || *tail == ';' || *tail == '\n' || *tail == '\t' || *tail == '\r')) {
        tail++;
    }
    if ((tail != NULL && *tail != 0) || !p_stmt_readonly(st)
        || p_bind_parameter_count(st) != (int)PyBytes_GET_SIZE(pk)
        || p_column_count(st) != (int)PyBytes_GET_SIZE(ek) || PyBytes_GET_SIZE(ek) == 0) {
        p_finalize(st);
        Py_RETURN_FALSE;
    }
    Entry e;
    memset(&e, 0, sizeof(e));
    e.stmt = st;
    Py_ssize_t n;
    if ((e.name = dup_bytes(name, &e.name_len)) == NULL || (e.pkinds = (unsigned char *)dup_bytes(pk, &n)) == NULL
        || (e.bkinds = (unsigned char *)dup_bytes(bk, &n)) == NULL
        || (e.ekinds = (unsigned char *)dup_bytes(ek, &n)) == NULL || (e.desc = dup_bytes(desc, &e.desc_len)) == NULL
        || (e.tag = dup_bytes(tag, &e.tag_len)) == NULL) {
        entry_clear(&e);
        return NULL;
    }
    e.nparams = (int)PyBytes_GET_SIZE(pk);
    e.ncols = (int)PyBytes_GET_SIZE(ek);
    self->entries[self->nentries++] = e;
    Py_RETURN_TRUE;
}

static PyObject *
Native_forget(Native *self, PyObject *name)
{
    if (!PyBytes_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "forget() takes bytes");
        return NULL;
    }
    return PyBool_FromLong(forget_name(self, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)));
}

static PyObject *
Native_close(Native *self, PyObject *Py_UNUSED(ignored))
{
    for (int i = 0; i < self->nentries; i++) {
        entry_clear(&self->entries[i]);
    }
    self->nentries = 0;
    self->enabled = 0;
    self->db = NULL;
    Py_RETURN_NONE;
}

static PyObject *
Native_run(Native *self, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "run() takes bytes");
        return NULL;
    }
    if (!self->enabled || self->interrupted || self->nentries == 0 || !guards_hold()) {
        Py_RETURN_NONE;
    }
    int done;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    Py_BEGIN_ALLOW_THREADS
    done = answer(self, p, n);
    Py_END_ALLOW_THREADS
    if (!done) {
        Py_RETURN_NONE;
    }
    return PyBytes_FromStringAndSize(self->out, self->out_len);
}

static PyObject *
Native_serve(Native *self, PyObject *arg)
{
    long fdl = PyLong_AsLong(arg);
    int fd = (int)fdl;
    if (fdl == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int armed = self->enabled && self->nentries > 0 && guards_hold();
    for (;;) {
        Py_ssize_t n;
        int done = 0, err = 0;
        Py_ssize_t sent = 0;
        Py_BEGIN_ALLOW_THREADS
        n = recv(fd, self->in, (size_t)self->in_cap, 0);
        if (n < 0) {
            err = errno;
        }
        else if (n > 0 && armed && answer(self, (const unsigned char *)self->in, n)) {
            done = 1;
            while (sent < self->out_len) {
                ssize_t s = send(fd, self->out + sent, (size_t)(self->out_len - sent), MSG_NOSIGNAL);
                if (s < 0) {
                    if (errno == EINTR) {
                        continue;
                    }
                    err = errno;
                    break;
                }
                sent += s;
            }
        }
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    return NULL;
                }
                continue;
            }
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (done) {
            if (err) {
                errno = err;
                return PyErr_SetFromErrno(PyExc_OSError);
            }
            Py_RETURN_NONE;
        }
        return PyBytes_FromStringAndSize(self->in, n);
    }
}

static PyObject *
Native_get_enabled(Native *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->enabled);
}

static int
Native_set_enabled(Native *self, PyObject *v, void *Py_UNUSED(c))
{
    int b = PyObject_IsTrue(v);
    if (b < 0) {
        return -1;
    }
    self->enabled = b && self->db != NULL;
    return 0;
}

static PyObject *
Native_get_interrupted(Native *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->interrupted);
}

static int
Native_set_interrupted(Native *self, PyObject *v, void *Py_UNUSED(c))
{
    int b = PyObject_IsTrue(v);
    if (b < 0) {
        return -1;
    }
    self->interrupted = b;
    return 0;
}

static PyObject *
Native_get_served(Native *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(self->served);
}

static PyObject *
Native_get_statements(Native *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(self->nentries);
}

static PyGetSetDef Native_getset[] = {
    {"enabled", (getter)Native_get_enabled, (setter)Native_set_enabled, "serve bursts now", NULL},
    {"served", (getter)Native_get_served, NULL, "bursts answered here", NULL},
    {"interrupted", (getter)Native_get_interrupted, (setter)Native_set_interrupted,
     "a CancelRequest interrupted the last burst", NULL},
    {"statements", (getter)Native_get_statements, NULL, "registered statements", NULL},
    {NULL},
};

static PyMethodDef Native_methods[] = {
    {"register", (PyCFunction)Native_register, METH_VARARGS, "register a planned statement"},
    {"forget", (PyCFunction)Native_forget, METH_O, "drop a statement by name"},
    {"run", (PyCFunction)Native_run, METH_O, "answer a burst already read, or None"},
    {"serve", (PyCFunction)Native_serve, METH_O, "recv, answer what it can, send"},
    {"filename", (PyCFunction)Native_filename, METH_NOARGS, "the main database file of the handle"},
    {"close", (PyCFunction)Native_close, METH_NOARGS, "finalize every statement; serve nothing more"},
    {NULL},
};

static PyTypeObject NativeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sqlserver._pgfast.Native",
    .tp_basicsize = sizeof(Native),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Native_init,
    .tp_dealloc = (destructor)Native_dealloc,
    .tp_methods = Native_methods,
    .tp_getset = Native_getset,
    .tp_doc = "one session's prepared-SELECT fast path (see the module docstring)",
};

/* ------------------------------------------------------------------------------- module functions */
/* load(path of the _sqlite3 extension) -> bool: resolve SQLite's functions in its library scope */
static PyObject *
mod_load(PyObject *Py_UNUSED(m), PyObject *arg)
{
    if (loaded) {
        Py_RETURN_TRUE;
    }
    PyObject *b;
    if (!PyUnicode_FSConverter(arg, &b)) {
        return NULL;
    }
    void *h = dlopen(PyBytes_AS_STRING(b), RTLD_NOW | RTLD_NOLOAD);
    Py_DECREF(b);
    if (h == NULL) {
        Py_RETURN_FALSE;
    }
#define SYM(var, name)                                   \
    do {                                                 \
        *(void **)(&var) = dlsym(h, name);               \
        if (var == NULL) {                               \
            Py_RETURN_FALSE;                             \
        }                                                \
    } while (0)
    SYM(p_prepare_v2, "sqlite3_prepare_v2");
    SYM(p_step, "sqlite3_step");
    SYM(p_reset, "sqlite3_reset");
    SYM(p_clear_bindings, "sqlite3_clear_bindings");
    SYM(p_finalize, "sqlite3_finalize");
    SYM(p_bind_int64, "sqlite3_bind_int64");
    SYM(p_bind_text, "sqlite3_bind_text");
    SYM(p_bind_null, "sqlite3_bind_null");
    SYM(p_bind_parameter_count, "sqlite3_bind_parameter_count");
    SYM(p_column_count, "sqlite3_column_count");
    SYM(p_column_type, "sqlite3_column_type");
    SYM(p_column_int64, "sqlite3_column_int64");
    SYM(p_column_text, "sqlite3_column_text");
    SYM(p_column_bytes, "sqlite3_column_bytes");
    SYM(p_stmt_readonly, "sqlite3_stmt_readonly");
    SYM(p_get_autocommit, "sqlite3_get_autocommit");
    SYM(p_db_filename, "sqlite3_db_filename");
#undef SYM
    loaded = 1;
    Py_RETURN_TRUE;
}

/* set_guards([(function, code), ...]): serve only while every function still runs that code */
static PyObject *
mod_set_guards(PyObject *Py_UNUSED(m), PyObject *arg)
{
    PyObject *seq = PySequence_Fast(arg, "set_guards() takes a sequence of (function, code) pairs");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **funcs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *));
    PyObject **codes = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *));
    if (funcs == NULL || codes == NULL) {
        PyMem_Free(funcs);
        PyMem_Free(codes);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *f, *c;
        if (!PyArg_ParseTuple(pair, "OO", &f, &c) || !PyFunction_Check(f) || !PyCode_Check(c)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "a guard is a (function, code) pair");
            }
            for (Py_ssize_t j = 0; j < i; j++) {
                Py_DECREF(funcs[j]);
                Py_DECREF(codes[j]);
            }
            PyMem_Free(funcs);
            PyMem_Free(codes);
            Py_DECREF(seq);
            return NULL;
        }
        Py_INCREF(f);
        Py_INCREF(c);
        funcs[i] = f;
        codes[i] = c;
    }
    Py_DECREF(seq);
    PyObject **old_f = guard_funcs, **old_c = guard_codes;
    Py_ssize_t old_n = nguards;
    guard_funcs = funcs;
    guard_codes = codes;
    nguards = n;
    for (Py_ssize_t j = 0; j < old_n; j++) {
        Py_DECREF(old_f[j]);
        Py_DECREF(old_c[j]);
    }
    PyMem_Free(old_f);
    PyMem_Free(old_c);
    Py_RETURN_NONE;
}

static PyObject *
mod_guards_hold(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(guards_hold());
}

static PyMethodDef module_methods[] = {
    {"load", mod_load, METH_O, "resolve SQLite's functions from the _sqlite3 module's library"},
    {"set_guards", mod_set_guards, METH_O, "the (function, code) pairs the fast path stands in for"},
    {"guards_hold", mod_guards_hold, METH_NOARGS, "whether no guarded function was patched"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "sqlserver._pgfast",
    "The prepared-SELECT fast path of sqlserver, without the GIL (see _pgfast.c).",
    -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__pgfast(void)
{
    if (PyType_Ready(&NativeType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&NativeType);
    if (PyModule_AddObject(m, "Native", (PyObject *)&NativeType) < 0) {
        Py_DECREF(&NativeType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
