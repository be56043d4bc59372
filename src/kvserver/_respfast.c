/* kvserver._respfast: the request parser's fast path in C (optional; kvserver.resp falls back to
 * hiredis and to pure Python when this module is not built).
 *
 * parse_requests(buf: bytes, max_args: int) -> list[list[bytes]] | None
 * encode_request(argv: list[bytes]) -> bytes | None
 *
 * Returns the requests in buf if buf is exactly a run of complete multibulk requests of the plain
 * form "*<k>\r\n" followed by k times "$<len>\r\n<len bytes><2 bytes>", with 1 <= k <= max_args and
 * every <k> and <len> a run of 1-9 ASCII digits without a leading zero (or the single digit 0 for
 * <len>). Returns None for anything else: an incomplete last request, an inline command, an empty
 * request ("*0", "*-1"), a sign, a blank, any other type byte, a longer number. The caller then
 * hands the whole buffer to the reference parser (kvserver.resp.PythonRequestParser), which decides.
 *
 * Why this is exact: every buffer accepted here is read by the reference parser the same way. It
 * finds the same CRLF after each header (a header here holds digits only, so its first CRLF is the
 * one right after the digits), reads the same number (no sign, no leading zero, fewer digits than
 * its own limit), takes the same payload and, like Redis and the reference parser, does not inspect
 * the two bytes after a payload. Size limits are the caller's: it passes only buffers below the
 * smallest limit, so no limit can be exceeded inside one (kvserver.resp, HiredisRequestParser).
 *
 * Memory safety: every read is checked against `end` before it happens; numbers are at most 9
 * digits, so they fit in a Py_ssize_t; a payload is copied only after checking that it and its
 * two trailing bytes lie inside the buffer.
 *
 * After changing this file run scripts/fuzz_respfast.py: it builds it with AddressSanitizer and UBSan
 * and checks it against the reference parser on hundreds of thousands of near-miss buffers.
 */
/* encode_request is the inverse, for the append-only file (kvserver.aof): a list of bytes becomes
 * "*<k>\r\n" and k times "$<len>\r\n<bytes>\r\n", exactly what kvserver.resp.encode_command gives
 * for the same arguments. Anything else (not a list, an element that is not exactly bytes, an empty
 * list) returns None and the caller uses encode_command. Sizes are summed first and checked against
 * PY_SSIZE_T_MAX, then the bytes object is allocated once and filled; every write stays inside it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_DIGITS 9

/* Reads "<digits>\r\n" at *p (bounded by end). Returns the number, or -1 if the text is not a plain
 * canonical number followed by CRLF (or the buffer ends first). Advances *p past the CRLF. */
static Py_ssize_t
read_number(const char **p, const char *end)
{
    const char *s = *p;
    Py_ssize_t value = 0;
    int digits = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        if (++digits > MAX_DIGITS) {
            return -1;
        }
        value = value * 10 + (*s - '0');
        s++;
    }
    if (digits == 0 || (digits > 1 && (*p)[0] == '0')) {
        return -1;
    }
    if (end - s < 2 || s[0] != '\r' || s[1] != '\n') {
        return -1;
    }
    *p = s + 2;
    return value;
}

static PyObject *
parse_requests(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "parse_requests(buf: bytes, max_args: int)");
        return NULL;
    }
    Py_ssize_t max_args = PyLong_AsSsize_t(args[1]);
    if (max_args == -1 && PyErr_Occurred()) {
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(args[0]);
    const char *end = p + PyBytes_GET_SIZE(args[0]);
    if (p == end) {
        Py_RETURN_NONE;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    while (p < end) {
        if (*p != '*') {
            goto not_handled;
        }
        p++;
        Py_ssize_t count = read_number(&p, end);
        /* An argument takes at least 6 bytes ("$0\r\n" and two more): a count the rest of the buffer
         * cannot hold means an incomplete request, and must not allocate a list that large. */
        if (count < 1 || count > max_args || count > (end - p) / 6) {
            goto not_handled;
        }
        PyObject *argv = PyList_New(count);
        if (argv == NULL) {
            goto error;
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            if (p >= end || *p != '$') {
                Py_DECREF(argv);
                goto not_handled;
            }
            p++;
            Py_ssize_t size = read_number(&p, end);
            if (size < 0 || end - p < size + 2) {
                Py_DECREF(argv);
                goto not_handled;
            }
            PyObject *arg = PyBytes_FromStringAndSize(p, size);
            if (arg == NULL) {
                Py_DECREF(argv);
                goto error;
            }
            PyList_SET_ITEM(argv, i, arg); /* steals the reference */
            p += size + 2;
        }
        if (PyList_Append(out, argv) < 0) {
            Py_DECREF(argv);
            goto error;
        }
        Py_DECREF(argv);
    }
    return out;

not_handled:
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_DECREF(out);
    return NULL;
}

/* Decimal digits of a non-negative n, written backwards from `out_end`; returns the start. */
static char *
write_decimal(char *out_end, Py_ssize_t n)
{
    char *q = out_end;
    do {
        *--q = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    return q;
}

#define HEADER_MAX 24 /* '$' or '*', up to 19 digits, CRLF: a Py_ssize_t always fits */

static PyObject *
encode_request(PyObject *module, PyObject *argv)
{
    if (!PyList_CheckExact(argv) || PyList_GET_SIZE(argv) == 0) {
        Py_RETURN_NONE;
    }
    Py_ssize_t count = PyList_GET_SIZE(argv);
    Py_ssize_t total = HEADER_MAX;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *arg = PyList_GET_ITEM(argv, i);
        if (!PyBytes_CheckExact(arg)) {
            Py_RETURN_NONE;
        }
        Py_ssize_t size = PyBytes_GET_SIZE(arg);
        if (size > PY_SSIZE_T_MAX - total - HEADER_MAX - 2) {
            PyErr_SetString(PyExc_OverflowError, "request too large to encode");
            return NULL;
        }
        total += HEADER_MAX + size + 2;
    }
    /* Allocated for the worst-case header lengths, then shrunk to what was written. */
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        return NULL;
    }
    char *w = PyBytes_AS_STRING(out);
    char digits[HEADER_MAX];
    char *digits_end = digits + sizeof(digits);
    char *d = write_decimal(digits_end, count);
    *w++ = '*';
    memcpy(w, d, (size_t)(digits_end - d));
    w += digits_end - d;
    *w++ = '\r';
    *w++ = '\n';
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *arg = PyList_GET_ITEM(argv, i);
        Py_ssize_t size = PyBytes_GET_SIZE(arg);
        d = write_decimal(digits_end, size);
        *w++ = '$';
        memcpy(w, d, (size_t)(digits_end - d));
        w += digits_end - d;
        *w++ = '\r';
        *w++ = '\n';
        memcpy(w, PyBytes_AS_STRING(arg), (size_t)size);
        w += size;
        *w++ = '\r';
        *w++ = '\n';
    }
    if (_PyBytes_Resize(&out, w - PyBytes_AS_STRING(out)) < 0) {
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"parse_requests", (PyCFunction)(void (*)(void))parse_requests, METH_FASTCALL,
     "parse_requests(buf, max_args) -> list of requests, or None when buf is not a run of complete "
     "plain multibulk requests (the caller's reference parser then decides)."},
    {"encode_request", (PyCFunction)encode_request, METH_O,
     "encode_request(argv) -> the multibulk request for a list of bytes, or None for anything else "
     "(the caller then uses kvserver.resp.encode_command)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "kvserver._respfast",
    "The request parser's fast path in C (see kvserver.resp).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__respfast(void)
{
    return PyModule_Create(&module);
}
