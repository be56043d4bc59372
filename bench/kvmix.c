/* kvmix: a closed-loop mixed GET/SET load for a RESP server (bench/replication_overhead.py).
 *
 * Theory of operation. CLIENTS connections, one thread, epoll. Each connection always has exactly one
 * request outstanding (closed loop, like YCSB's client threads): when its reply arrives it draws the
 * next operation, a GET with probability READ_PCT/100 and otherwise a SET of a 3-byte value, on a key
 * drawn uniformly from key:000000000000 .. key:(KEYS-1) (redis-benchmark -r's key names, so its
 * populate run fills the same keys). So the read/update mix is that of the requests each client
 * issues, whatever the two operations' latencies: per-operation client pools (GET clients beside SET
 * clients) would let a slower SET shift the mix towards reads. After WARMUP seconds the replies
 * start being counted, for SECONDS seconds of wall time; then it prints
 *     gets=N sets=N errors=N window_s=F
 * and exits. An error reply counts as an error (and the loop goes on); a closed connection ends the
 * run with exit status 1.
 *
 *     kvmix HOST PORT CLIENTS READ_PCT KEYS WARMUP SECONDS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    int is_get;      /* the outstanding request's operation */
    uint64_t rng;    /* xorshift64 state, per connection */
    char buf[4096];  /* the reply read so far */
    size_t len;
} conn_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t next_rand(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static long read_pct, keys;

/* Send the connection's next request (a short blocking write: a few dozen bytes). */
static int send_next(conn_t *c) {
    char req[128], key[32];
    long k = (long)(next_rand(&c->rng) % (uint64_t)keys);
    int klen = snprintf(key, sizeof key, "key:%012ld", k);
    int n;
    c->is_get = (long)(next_rand(&c->rng) % 100) < read_pct;
    if (c->is_get)
        n = snprintf(req, sizeof req, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", klen, key);
    else
        n = snprintf(req, sizeof req, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$3\r\nxxx\r\n", klen, key);
    c->len = 0;
    return write(c->fd, req, (size_t)n) == n ? 0 : -1;
}

/* 1 if buf holds one whole reply (+, -, :, or a bulk string), 0 if not yet; *err for '-'. */
static int complete(const char *buf, size_t len, int *err) {
    const char *eol = memmem(buf, len, "\r\n", 2);
    if (eol == NULL) return 0;
    *err = buf[0] == '-';
    if (buf[0] != '$') return 1;
    long n = strtol(buf + 1, NULL, 10);
    if (n < 0) return 1;
    return len >= (size_t)(eol - buf) + 2 + (size_t)n + 2;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: kvmix HOST PORT CLIENTS READ_PCT KEYS WARMUP SECONDS\n");
        return 2;
    }
    int clients = atoi(argv[3]);
    read_pct = atol(argv[4]);
    keys = atol(argv[5]);
    double warmup = atof(argv[6]), seconds = atof(argv[7]);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (clients < 1 || keys < 1 || inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "kvmix: bad arguments\n");
        return 2;
    }
    int ep = epoll_create1(0);
    conn_t *conns = calloc((size_t)clients, sizeof *conns);
    for (int i = 0; i < clients; i++) {
        conn_t *c = &conns[i];
        int one = 1;
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        c->rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            perror("kvmix: connect");
            return 1;
        }
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    for (int i = 0; i < clients; i++)
        if (send_next(&conns[i]) != 0) return 1;
    double t0 = now(), start = t0 + warmup, end = start + seconds, t = t0;
    long gets = 0, sets = 0, errors = 0;
    int counting = 0;
    struct epoll_event evs[256];
    while (t < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        if (n < 0 && errno != EINTR) return 1;
        t = now();
        if (!counting && t >= start) {
            counting = 1;
            start = t;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
            if (r <= 0) {
                fprintf(stderr, "kvmix: connection closed by the server\n");
                return 1;
            }
            c->len += (size_t)r;
            int err = 0;
            if (!complete(c->buf, c->len, &err)) continue;
            if (counting && t < end) {
                if (err) errors++;
                else if (c->is_get) gets++;
                else sets++;
            }
            if (send_next(c) != 0) return 1;
        }
    }
    printf("gets=%ld sets=%ld errors=%ld window_s=%.6f\n", gets, sets, errors, t - start);
    return 0;
}
