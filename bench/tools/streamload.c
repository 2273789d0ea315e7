/*
 * streamload: the WebSocket, SSE, TCP and UDP load generator and backends of the a3s_gateway
 * benchmark (bench/harness/streamload.py builds it with gcc and drives it; SPEC section 15).
 *
 * One program, one thread, epoll over non-blocking sockets, eight modes:
 *
 *   ws-client       N connections each do the HTTP/1.1 upgrade handshake (a fixed
 *                   Sec-WebSocket-Key; the answer must be 101 with the matching
 *                   Sec-WebSocket-Accept), then run a closed loop for the duration: send one
 *                   masked binary message of --size bytes, wait for its echo (checked byte by
 *                   byte), send the next.
 *   ws-echo-server  answers each upgrade with 101 and its computed Sec-WebSocket-Accept, then
 *                   echoes every data frame unmasked (ping: pong, close: close).
 *   sse-client      N connections each GET a text/event-stream (200, chunked or not), then
 *                   count the events received during the duration; each event's delay is the
 *                   clock now minus the CLOCK_MONOTONIC time its data line carries. With
 *                   --credits it reports what each stream received to the server (below).
 *   sse-server      answers every request with an endless chunked text/event-stream; each
 *                   event is its own chunk and its own send(), written as fast as the socket
 *                   takes them: "data: <16 hex digits of CLOCK_MONOTONIC ns> <15-digit
 *                   sequence>\n\n" (40 bytes, a 32-byte data field). With --credits and
 *                   --window W, a stream the client named (`?stream=<token>-<index>`) never
 *                   has more than W events in flight.
 *   tcp-client      N connections run a closed loop for the duration: send one message of
 *                   --size bytes, wait until as many bytes came back (checked byte by byte),
 *                   send the next. A connection's handshake is its first message's echo (the
 *                   path through the proxy to the backend works).
 *   tcp-echo-server writes back every byte it reads, on every connection.
 *   udp-client      N connected UDP sockets, each with one datagram of --size bytes out at a
 *                   time (its first 8 bytes a sequence number, the next 4 the socket's index);
 *                   an echo that matches the outstanding datagram is counted and the next one
 *                   sent; a datagram without an echo for --retry seconds is counted as lost
 *                   and the next one (a new sequence number) sent, so the loop never stalls;
 *                   an echo of an older datagram that arrives after that is counted as late.
 *                   Before the measured window each socket must get one echo (within
 *                   --timeout, retransmitting every --retry), so the proxy's sessions exist.
 *   udp-echo-server sends every datagram back to where it came from (recvmmsg and sendmmsg
 *                   on one blocking socket: one socket needs no epoll).
 *
 * The clients connect and handshake every connection first (bounded by --timeout), then
 * measure for --duration seconds and print one line:
 *   STREAMLOAD {"mode":..,"connections":..,"open":..,"count":..,"duration_us":..,"cpu_us":..,
 *     "bytes":..,"lost":..,"late":..,"errors":{"connect":..,"handshake":..,"read":..,
 *     "write":..,"timeout":..,"protocol":..},
 *     "latency_us":{"min":..,"mean":..,"p50":..,"p90":..,"p99":..,"max":..},"first_error":".."}
 * count: messages echoed (ws, tcp, udp) or events received (sse) in the measured window, cpu_us
 * the client's own CPU time (user + system) in that window, lost and late the UDP datagrams
 * given up after --retry and their echoes that came later all the same (0 in the other
 * modes); latencies are nearest-rank percentiles of a log-linear histogram (exact below
 * 1024 us, then 512 buckets per power of two: within 0.2 %, reported as the bucket's highest
 * value). A connection whose echo or next bytes do not come within --timeout is counted as a
 * timeout and closed (not a UDP socket: its datagrams are retried). The servers run until
 * killed. --self-test checks the SHA-1 and the accept key of RFC 6455.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HEAD_CAP 8192
#define IN_CAP 16384
#define MAX_SIZE 4096
#define MAX_EVENTS 256
#define EVENT_CAP 1024
#define OUT_LIMIT (4 << 20) /* a WebSocket client that stopped reading its echoes: dropped */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define CLIENT_KEY "YTNzLWJlbmNoLWtleS0wMQ=="
#define MAX_STREAMS 4096
#define CREDIT_BATCH 128

/* SSE flow control: a client tells the server, over a Unix datagram socket, how many events
 * stream `index` of its run `token` has received; the server keeps at most --window events of
 * a stream in flight (sent but not yet received), so queues stay bounded and an event's latency
 * is the relay's, not the time it waited behind megabytes in socket buffers. The client sends
 * no credit before the measured window: while the other streams open, each one stops after its
 * first --window events instead of loading the proxy outside the measurement. */
struct credit {
    uint64_t token;
    uint32_t index, unused;
    uint64_t received;
};
static int credit_fd = -1;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

__attribute__((noreturn)) static void fatal(const char *what) {
    fprintf(stderr, "streamload: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* ---- SHA-1 (FIPS 180-4) and base64: the Sec-WebSocket-Accept value ------------------------- */

static uint32_t rol(uint32_t v, int n) { return (v << n) | (v >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *p) {
    uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
        else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
        else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
        else f = b ^ c ^ d, k = 0xCA62C1D6;
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rol(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

static void sha1(const uint8_t *data, size_t n, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t i = 0;
    for (; i + 64 <= n; i += 64) sha1_block(h, data + i);
    uint8_t tail[128] = {0};
    size_t rest = n - i, total = rest + 9 <= 64 ? 64 : 128;
    memcpy(tail, data + i, rest);
    tail[rest] = 0x80;
    for (int j = 0; j < 8; j++) tail[total - 1 - j] = (uint8_t)(((uint64_t)n * 8) >> (8 * j));
    sha1_block(h, tail);
    if (total == 128) sha1_block(h, tail + 64);
    for (int j = 0; j < 20; j++) out[j] = (uint8_t)(h[j / 4] >> (24 - 8 * (j % 4)));
}

static void base64(const uint8_t *in, size_t n, char *out) {
    static const char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = digits[v >> 18 & 63];
        out[o++] = digits[v >> 12 & 63];
        out[o++] = i + 1 < n ? digits[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? digits[v & 63] : '=';
    }
    out[o] = 0;
}

/* The Sec-WebSocket-Accept of `key` (RFC 6455 section 4.2.2) into `out` (29 bytes). */
static void accept_key(const char *key, size_t n, char out[29]) {
    char joined[256];
    uint8_t digest[20];
    if (n > sizeof joined - sizeof WS_GUID) n = sizeof joined - sizeof WS_GUID;
    memcpy(joined, key, n);
    memcpy(joined + n, WS_GUID, sizeof WS_GUID - 1);
    sha1((const uint8_t *)joined, n + sizeof WS_GUID - 1, digest);
    base64(digest, 20, out);
}

/* ---- HTTP heads ------------------------------------------------------------------------ */

/* The value of header `name` in the head `head` (NUL-terminated), trimmed; NULL if absent. */
static const char *header(const char *head, const char *name, size_t *len) {
    size_t n = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *value = line + n + 1, *end = strstr(value, "\r\n");
            while (*value == ' ' || *value == '\t') value++;
            if (!end) end = value + strlen(value);
            while (end > value && (end[-1] == ' ' || end[-1] == '\t')) end--;
            *len = (size_t)(end - value);
            return value;
        }
    }
    return NULL;
}

/* ---- sockets ------------------------------------------------------------------------- */

static struct sockaddr_in address(const char *host, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "streamload: not an IPv4 address: %s\n", host);
        exit(2);
    }
    return a;
}

static void no_delay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int epoll_fd;

static void watch(int op, int fd, uint32_t events, void *ptr) {
    struct epoll_event e = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(epoll_fd, op, fd, &e) < 0) fatal("epoll_ctl");
}

/* ---- the clients' connections, counters and histogram ---------------------------------- */

enum { C_CONNECTING, C_HEAD, C_OPEN, C_DEAD };
/* What a client or server speaks (from --mode). */
enum { K_WS, K_SSE, K_TCP, K_UDP };
static int kind;
enum { E_CONNECT, E_HANDSHAKE, E_READ, E_WRITE, E_TIMEOUT, E_PROTOCOL, E_KINDS };
static const char *const error_names[E_KINDS] = {"connect", "handshake", "read",
                                                 "write",   "timeout",   "protocol"};

struct client {
    int fd, state;
    size_t in_len, out_len, out_off;
    uint8_t in[IN_CAP];
    uint8_t out[MAX_SIZE + 512];   /* the handshake request, then the pending frame */
    uint8_t sent[MAX_SIZE];        /* the last message's payload (the echo must match) */
    uint64_t since;                /* when the last message left or the last bytes came (ns) */
    int waiting;                   /* ws: a message is out, its echo not yet back */
    int chunked, chunk_state, chunk_ext;
    uint64_t events, reported;     /* sse: events received; the count the server was told */
    uint64_t chunk_left;
    size_t event_len;
    char event[EVENT_CAP];
};

#define HIST_LINEAR 1024
#define HIST_SUB 512
#define HIST_BUCKETS (HIST_LINEAR + 40 * HIST_SUB)

static struct {
    const char *mode, *host, *path, *credits;
    int port, connections, size, window;
    double duration, timeout, retry;
} opt = {.host = "127.0.0.1", .path = "/", .connections = 64, .size = 32, .duration = 3.0,
         .timeout = 5.0, .retry = 0.2};

static struct client *clients;
static int open_count, counting;
static uint64_t count, bytes_in, errors[E_KINDS], lat_min = UINT64_MAX, lat_max, lat_sum;
static uint64_t lost, late; /* udp: datagrams given up after --retry, echoes after that */
static uint64_t hist[HIST_BUCKETS];
static char first_error[160];

static size_t hist_index(uint64_t us) {
    if (us < HIST_LINEAR) return (size_t)us;
    int top = 63 - __builtin_clzll(us);
    size_t index = HIST_LINEAR + (size_t)(top - 10) * HIST_SUB +
                   (size_t)((us >> (top - 9)) - HIST_SUB); /* 512 buckets per power of two */
    return index < HIST_BUCKETS ? index : HIST_BUCKETS - 1;
}

static uint64_t hist_value(size_t index) {
    if (index < HIST_LINEAR) return index;
    size_t level = (index - HIST_LINEAR) / HIST_SUB, sub = (index - HIST_LINEAR) % HIST_SUB;
    int shift = (int)level + 1;
    return (((uint64_t)HIST_SUB + sub) << shift) + ((uint64_t)1 << shift) - 1;
}

static void record(uint64_t sent, uint64_t now) {
    if (!counting) return;
    uint64_t us = now > sent ? (now - sent) / 1000 : 0;
    count++;
    hist[hist_index(us)]++;
    lat_sum += us;
    if (us < lat_min) lat_min = us;
    if (us > lat_max) lat_max = us;
}

static uint64_t percentile(double share) {
    uint64_t rank = (uint64_t)(share / 100.0 * (double)count + 0.999999), seen = 0;
    if (rank < 1) rank = 1;
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        if ((seen += hist[i]) >= rank) return hist_value(i) < lat_max ? hist_value(i) : lat_max;
    return lat_max;
}

static void fail(struct client *c, int kind, const char *fmt, ...) {
    errors[kind]++;
    if (!first_error[0]) {
        va_list args;
        int n = snprintf(first_error, sizeof first_error, "%s: ", error_names[kind]);
        va_start(args, fmt);
        vsnprintf(first_error + n, sizeof first_error - (size_t)n, fmt, args);
        va_end(args);
        for (char *p = first_error; *p; p++)
            if (*p < 32 || *p > 126 || *p == '"' || *p == '\\') *p = '?';
    }
    if (c && c->state != C_DEAD) {
        close(c->fd);
        if (c->state == C_OPEN) open_count--;
        c->state = C_DEAD;
    }
}

/* Count the error and drop the connection, then return from the (void) caller. */
#define FAIL(...)          \
    do {                   \
        fail(__VA_ARGS__); \
        return;            \
    } while (0)

/* CPU time (user + system) this process has used, in µs. */
static uint64_t cpu_us(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (uint64_t)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000u +
           (uint64_t)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static void print_summary(uint64_t duration_ns, uint64_t cpu) {
    printf("STREAMLOAD {\"mode\":\"%s\",\"connections\":%d,\"open\":%d,\"count\":%llu,"
           "\"duration_us\":%llu,\"cpu_us\":%llu,\"bytes\":%llu,\"lost\":%llu,\"late\":%llu,"
           "\"errors\":{",
           opt.mode, opt.connections, open_count, (unsigned long long)count,
           (unsigned long long)(duration_ns / 1000), (unsigned long long)cpu,
           (unsigned long long)bytes_in, (unsigned long long)lost, (unsigned long long)late);
    for (int k = 0; k < E_KINDS; k++)
        printf("%s\"%s\":%llu", k ? "," : "", error_names[k], (unsigned long long)errors[k]);
    printf("},\"latency_us\":{\"min\":%llu,\"mean\":%.1f,\"p50\":%llu,\"p90\":%llu,"
           "\"p99\":%llu,\"max\":%llu},\"first_error\":\"%s\"}\n",
           (unsigned long long)(count ? lat_min : 0), count ? (double)lat_sum / (double)count : 0.0,
           (unsigned long long)(count ? percentile(50) : 0),
           (unsigned long long)(count ? percentile(90) : 0),
           (unsigned long long)(count ? percentile(99) : 0), (unsigned long long)lat_max,
           first_error);
    fflush(stdout);
}

/* Write the client's pending bytes; 0 when all went, 1 when some wait for EPOLLOUT, -1 dead. */
static int client_flush(struct client *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            watch(EPOLL_CTL_MOD, c->fd, EPOLLIN | EPOLLOUT, c);
            return 1;
        }
        if (n < 0) {
            fail(c, E_WRITE, "%s", strerror(errno));
            return -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

static uint32_t random_state = 0x9E3779B9u;
static uint32_t next_random(void) {
    random_state ^= random_state << 13, random_state ^= random_state >> 17;
    return random_state ^= random_state << 5;
}

/* ws: queue and send the next masked binary message. */
static void ws_send(struct client *c) {
    uint32_t mask = next_random(), seed = next_random();
    size_t n = (size_t)opt.size, h = n < 126 ? 2 : 4;
    uint8_t *f = c->out;
    f[0] = 0x82;
    if (n < 126) f[1] = (uint8_t)(0x80 | n);
    else f[1] = 0x80 | 126, f[2] = (uint8_t)(n >> 8), f[3] = (uint8_t)n;
    memcpy(f + h, &mask, 4);
    for (size_t i = 0; i < n; i++) {
        c->sent[i] = (uint8_t)('a' + (seed + i) % 26);
        f[h + 4 + i] = c->sent[i] ^ f[h + i % 4];
    }
    c->out_len = h + 4 + n;
    c->out_off = 0;
    c->waiting = 1;
    c->since = now_ns();
    client_flush(c);
}

/* ws: the frames the server sent; returns after the buffer holds no complete frame. */
static void ws_frames(struct client *c, uint64_t now, int sending) {
    size_t at = 0;
    while (c->state == C_OPEN && c->in_len - at >= 2) {
        uint8_t *f = c->in + at;
        uint64_t n = f[1] & 127;
        size_t h = 2;
        if (f[1] & 0x80) FAIL(c, E_PROTOCOL, "a masked frame from the server");
        if (n == 126) h = 4;
        if (n == 127) h = 10;
        if (c->in_len - at < h) break;
        if (n == 126) n = (uint64_t)f[2] << 8 | f[3];
        if (n == 127)
            for (int i = 0, j = 2; i < 8; i++, j++) n = i ? n << 8 | f[j] : f[j];
        if (n > IN_CAP - 14) FAIL(c, E_PROTOCOL, "a frame of %llu bytes", (unsigned long long)n);
        if (c->in_len - at < h + n) break;
        int opcode = f[0] & 15;
        if (opcode == 8) FAIL(c, E_READ, "the server sent Close");
        if (opcode == 1 || opcode == 2) {
            if (!c->waiting || n != (uint64_t)opt.size || memcmp(f + h, c->sent, n) != 0)
                FAIL(c, E_PROTOCOL, "the echo differs from the message sent");
            c->waiting = 0;
            record(c->since, now);
            if (sending) ws_send(c);
        } else if (opcode != 9 && opcode != 10) {
            FAIL(c, E_PROTOCOL, "a frame with opcode %d", opcode);
        }
        at += h + n;
    }
    if (c->state == C_OPEN && at) memmove(c->in, c->in + at, c->in_len -= at);
}

/* tcp: send the next message (letters from a random offset, as the WebSocket payloads). */
static void tcp_send(struct client *c) {
    uint32_t seed = next_random();
    for (size_t i = 0; i < (size_t)opt.size; i++)
        c->sent[i] = c->out[i] = (uint8_t)('a' + (seed + i) % 26);
    c->out_len = (size_t)opt.size;
    c->out_off = 0;
    c->waiting = 1;
    c->since = now_ns();
    client_flush(c);
}

/* tcp: the bytes read so far; once the whole echo is in, check it, count it, send the next. */
static void tcp_echo(struct client *c, uint64_t now, int sending) {
    size_t n = c->in_len, size = (size_t)opt.size;
    if (!c->waiting) FAIL(c, E_PROTOCOL, "%zu bytes while no message was out", n);
    if (n < size) return;
    if (n > size) FAIL(c, E_PROTOCOL, "%zu bytes back for a %zu-byte message", n, size);
    if (memcmp(c->in, c->sent, size) != 0)
        FAIL(c, E_PROTOCOL, "the echo differs from the message sent");
    c->in_len = 0;
    c->waiting = 0;
    record(c->since, now);
    if (sending) tcp_send(c);
}

/* sse: one complete event (ends with its empty line) */
static void sse_event(struct client *c, uint64_t now) {
    uint64_t stamp = 0;
    int good = c->event_len >= 24 && memcmp(c->event, "data: ", 6) == 0;
    for (int i = 6; good && i < 22; i++) {
        char h = c->event[i];
        int digit = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : -1;
        good = digit >= 0;
        stamp = stamp << 4 | (uint64_t)(digit & 15);
    }
    if (!good) FAIL(c, E_PROTOCOL, "an event without the time stamp: %.40s", c->event);
    c->events++;
    record(stamp, now);
}

/* sse: body bytes (after the chunked framing) split into lines and events */
static void sse_body(struct client *c, const uint8_t *p, size_t n, uint64_t now) {
    while (n && c->state == C_OPEN) {
        const uint8_t *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) + 1 : n;
        if (c->event_len + take >= EVENT_CAP)
            FAIL(c, E_PROTOCOL, "an event longer than %d bytes", EVENT_CAP);
        size_t line_start = c->event_len;
        memcpy(c->event + c->event_len, p, take);
        c->event_len += take;
        p += take, n -= take;
        if (!nl) break;
        size_t line = c->event_len - line_start;
        int empty = line == 1 || (line == 2 && c->event[line_start] == '\r');
        if (empty && line_start == 0) c->event_len = 0; /* a stray blank line */
        if (empty && line_start > 0) {
            c->event[c->event_len] = 0;
            sse_event(c, now);
            c->event_len = 0;
        }
    }
}

enum { CH_SIZE, CH_DATA, CH_CRLF };

static void sse_bytes(struct client *c, const uint8_t *p, size_t n, uint64_t now) {
    if (!c->chunked) {
        sse_body(c, p, n, now);
        return;
    }
    while (n && c->state == C_OPEN) {
        if (c->chunk_state == CH_DATA) {
            size_t take = c->chunk_left < n ? (size_t)c->chunk_left : n;
            sse_body(c, p, take, now);
            p += take, n -= take;
            if ((c->chunk_left -= take) == 0) c->chunk_state = CH_CRLF;
            continue;
        }
        uint8_t b = *p++;
        n--;
        if (c->chunk_state == CH_CRLF) {
            if (b == '\n') c->chunk_state = CH_SIZE, c->chunk_left = 0, c->chunk_ext = 0;
        } else if (c->chunk_state == CH_SIZE) {
            int digit = b >= '0' && b <= '9' ? b - '0'
                        : (b | 32) >= 'a' && (b | 32) <= 'f' ? (b | 32) - 'a' + 10 : -1;
            if (b == '\n') {
                if (c->chunk_left == 0) FAIL(c, E_READ, "the stream ended (last chunk)");
                c->chunk_state = CH_DATA;
            } else if (digit >= 0 && !c->chunk_ext) {
                if (c->chunk_left >> 56) FAIL(c, E_PROTOCOL, "a huge chunk size");
                c->chunk_left = c->chunk_left << 4 | (uint64_t)digit;
            } else {
                c->chunk_ext = 1; /* ';' extensions or the CR: skip to the end of the line */
            }
        }
    }
}

/* One epoll report for a client connection. */
static void client_connected(struct client *c);
static void client_readable(struct client *c, int sending);
static void client_event(struct client *c, uint32_t events, int sending) {
    if (c->state == C_CONNECTING) {
        client_connected(c);
        return;
    }
    if (c->state != C_DEAD && (events & EPOLLOUT) && c->out_len && client_flush(c) == 0)
        watch(EPOLL_CTL_MOD, c->fd, EPOLLIN, c);
    if (c->state != C_DEAD && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        client_readable(c, sending);
}

/* The response head: check it, then hand what follows it to the protocol. */
static void client_head(struct client *c, uint64_t now) {
    int ws = kind == K_WS;
    if (kind == K_TCP) { /* the first message's echo, not a head */
        if (c->in_len < (size_t)opt.size) return;
        if (c->in_len > (size_t)opt.size || memcmp(c->in, c->sent, c->in_len) != 0)
            FAIL(c, E_HANDSHAKE, "the first echo differs from the message sent");
        c->in_len = 0;
        c->waiting = 0;
        c->state = C_OPEN;
        c->since = now;
        open_count++;
        return;
    }
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end) {
        if (c->in_len == HEAD_CAP) fail(c, E_HANDSHAKE, "a response head over %d bytes", HEAD_CAP);
        return;
    }
    *end = 0;
    char *head = (char *)c->in, *eol = strstr(head, "\r\n");
    size_t len = 0, rest = c->in_len - (size_t)(end + 4 - head);
    const char *value;
    if (eol) *eol = 0;
    int good = strncmp(head, ws ? "HTTP/1.1 101" : "HTTP/1.1 200", 12) == 0 ||
               (!ws && strncmp(head, "HTTP/1.0 200", 12) == 0);
    if (!good) FAIL(c, E_HANDSHAKE, "answered %.100s", head);
    if (eol) *eol = '\r';
    if (ws) {
        char expected[29];
        accept_key(CLIENT_KEY, strlen(CLIENT_KEY), expected);
        value = header(head, "sec-websocket-accept", &len);
        if (!value || len != 28 || memcmp(value, expected, 28) != 0)
            FAIL(c, E_HANDSHAKE, "101 without the matching Sec-WebSocket-Accept");
    } else {
        value = header(head, "content-type", &len);
        if (!value) FAIL(c, E_HANDSHAKE, "200 without a content-type");
        if (len < 17 || strncasecmp(value, "text/event-stream", 17) != 0)
            FAIL(c, E_HANDSHAKE, "200 with content-type %.*s", (int)(len < 60 ? len : 60), value);
        value = header(head, "transfer-encoding", &len);
        c->chunked = value && len >= 7 && strncasecmp(value + len - 7, "chunked", 7) == 0;
    }
    c->state = C_OPEN;
    c->since = now;
    open_count++;
    memmove(c->in, end + 4, rest);
    c->in_len = rest;
    if (!ws) {
        c->in_len = 0;
        sse_bytes(c, c->in, rest, now);
    } else if (rest) {
        ws_frames(c, now, 0);
    }
}

static void client_readable(struct client *c, int sending) {
    static uint8_t buffer[65536];
    for (;;) {
        int head = c->state == C_HEAD, framed = kind != K_SSE && c->state == C_OPEN;
        uint8_t *into = head || framed ? c->in + c->in_len : buffer;
        size_t room = head ? HEAD_CAP - c->in_len : framed ? IN_CAP - c->in_len : sizeof buffer;
        ssize_t n = recv(c->fd, into, room, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        if (n <= 0) FAIL(c, head ? E_HANDSHAKE : E_READ, "%s",
                                n ? strerror(errno) : "the connection was closed");
        uint64_t now = now_ns();
        if (c->state == C_OPEN && !framed) c->since = now;
        if (counting && c->state == C_OPEN) bytes_in += (uint64_t)n;
        if (head) {
            c->in_len += (size_t)n;
            client_head(c, now);
        } else if (framed) {
            c->in_len += (size_t)n;
            if (kind == K_WS) ws_frames(c, now, sending);
            else tcp_echo(c, now, sending);
        } else {
            sse_bytes(c, buffer, (size_t)n, now);
        }
        if (c->state == C_DEAD || (size_t)n < room) return;
    }
}

static void client_connected(struct client *c) {
    int error = 0;
    socklen_t size = sizeof error;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &size);
    if (error) {
        errno = error;
        FAIL(c, E_CONNECT, "%s", strerror(error));
    }
    c->state = C_HEAD;
    watch(EPOLL_CTL_MOD, c->fd, EPOLLIN, c);
    if (kind == K_TCP) tcp_send(c); /* its echo is the handshake: the path works end to end */
    else client_flush(c);
}

/* sse: tell the server what each stream received since the last call; 1 if some must wait. */
static int send_credits(uint64_t token) {
    struct credit batch[CREDIT_BATCH];
    int members[CREDIT_BATCH], n = 0;
    for (int i = 0; i <= opt.connections; i++) {
        struct client *c = i < opt.connections ? &clients[i] : NULL;
        if (c && c->state == C_OPEN && c->events != c->reported) {
            batch[n] = (struct credit){.token = token, .index = (uint32_t)i, .received = c->events};
            members[n++] = i;
        }
        if (n == CREDIT_BATCH || (!c && n)) {
            if (send(credit_fd, batch, (size_t)n * sizeof *batch, MSG_DONTWAIT) < 0) return 1;
            for (; n > 0; n--) clients[members[n - 1]].reported = batch[n - 1].received;
        }
    }
    return 0;
}

static int run_client(void) {
    int ws = kind == K_WS, echo = kind != K_SSE;
    struct sockaddr_in to = address(opt.host, opt.port);
    struct epoll_event ready[MAX_EVENTS];
    uint64_t token = now_ns() ^ (uint64_t)getpid() << 40;
    int waiting_credits = 0;
    char path[320];
    clients = calloc((size_t)opt.connections, sizeof *clients);
    if (!clients) fatal("calloc");
    if (kind == K_SSE && opt.credits) {
        struct sockaddr_un server = {.sun_family = AF_UNIX};
        snprintf(server.sun_path, sizeof server.sun_path, "%s", opt.credits);
        credit_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (credit_fd < 0 || connect(credit_fd, (struct sockaddr *)&server, sizeof server) < 0)
            fatal(opt.credits);
    }
    for (int i = 0; i < opt.connections; i++) {
        struct client *c = &clients[i];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) fatal("socket");
        no_delay(c->fd);
        snprintf(path, sizeof path, credit_fd < 0 ? "%s" : "%s%cstream=%016llx-%d", opt.path,
                 strchr(opt.path, '?') ? '&' : '?', (unsigned long long)token, i);
        if (kind != K_TCP) /* tcp: no request, the connection is the handshake */
            c->out_len = (size_t)snprintf(
                (char *)c->out, sizeof c->out,
                ws ? "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " CLIENT_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n"
                   : "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\n\r\n",
                path, opt.host, opt.port);
        watch(EPOLL_CTL_ADD, c->fd, EPOLLOUT, c);
        if (connect(c->fd, (struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS)
            fail(c, E_CONNECT, "%s", strerror(errno));
    }
    /* Phase 1: every connection through its handshake (or failed), within --timeout. */
    uint64_t deadline = now_ns() + (uint64_t)(opt.timeout * 1e9);
    for (;;) {
        int pending = 0;
        for (int i = 0; i < opt.connections; i++) pending += clients[i].state < C_OPEN;
        uint64_t now = now_ns();
        if (!pending || now >= deadline) break;
        /* no credits yet: each SSE stream stops after its first --window events */
        int n = epoll_wait(epoll_fd, ready, MAX_EVENTS, (int)((deadline - now) / 1000000) + 1);
        if (n < 0 && errno != EINTR) fatal("epoll_wait");
        for (int i = 0; i < n; i++) client_event(ready[i].data.ptr, ready[i].events, 0);
    }
    for (int i = 0; i < opt.connections; i++)
        if (clients[i].state < C_OPEN)
            fail(&clients[i], clients[i].state == C_CONNECTING ? E_CONNECT : E_HANDSHAKE,
                 "no answer within %.0f s", opt.timeout);
    /* Phase 2: the measured window. */
    uint64_t cpu_start = cpu_us(), start = now_ns(), end = start + (uint64_t)(opt.duration * 1e9);
    uint64_t now = start;
    uint64_t timeout = (uint64_t)(opt.timeout * 1e9), next_check = start + 100000000u;
    counting = 1;
    if (credit_fd >= 0) waiting_credits = send_credits(token);
    for (int i = 0; i < opt.connections; i++) {
        struct client *c = &clients[i];
        c->since = start;
        if (echo && c->state == C_OPEN) (ws ? ws_send : tcp_send)(c);
    }
    while (open_count > 0 && now < end) {
        uint64_t until = next_check < end ? next_check : end; /* timeouts are checked too */
        int wait = waiting_credits ? 1 : (int)((until - now) / 1000000) + 1;
        int n = epoll_wait(epoll_fd, ready, MAX_EVENTS, wait);
        if (n < 0 && errno != EINTR) fatal("epoll_wait");
        for (int i = 0; i < n; i++) client_event(ready[i].data.ptr, ready[i].events, 1);
        if (credit_fd >= 0) waiting_credits = send_credits(token);
        now = now_ns();
        if (now >= next_check) {
            next_check = now + 100000000u;
            for (int i = 0; i < opt.connections; i++) {
                struct client *c = &clients[i];
                if (c->state == C_OPEN && (!echo || c->waiting) && now - c->since > timeout)
                    fail(c, E_TIMEOUT, "no %s within %.0f s", echo ? "echo" : "event", opt.timeout);
            }
        }
    }
    counting = 0;
    uint64_t stop = now_ns(), cpu = cpu_us() - cpu_start;
    static const uint8_t close_frame[] = {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8};
    for (int i = 0; i < opt.connections; i++) {
        if (clients[i].state != C_OPEN) continue;
        if (ws && send(clients[i].fd, close_frame, sizeof close_frame, MSG_NOSIGNAL) < 0) {
            /* best effort: the summary is what matters now */
        }
        close(clients[i].fd);
    }
    print_summary(stop - start, cpu);
    return 0;
}

/* ---- the servers ----------------------------------------------------------------------- */

struct peer {
    int fd, open, closing, http10, out_watched, windowed, index;
    size_t in_len, out_len, out_off, out_cap;
    uint64_t sequence, token, credited;
    uint8_t *out;
    uint8_t in[IN_CAP];
};

static struct peer *streams[MAX_STREAMS]; /* sse: the windowed streams by index */
static char credit_marker;                 /* the credits socket's epoll data */

static void peer_close(struct peer *p) {
    if (p->windowed && streams[p->index] == p) streams[p->index] = NULL;
    close(p->fd);
    free(p->out);
    free(p);
}

static int queue(struct peer *p, const void *data, size_t n) {
    if (p->out_len + n > p->out_cap) {
        size_t cap = p->out_cap ? p->out_cap : 4096;
        while (cap < p->out_len + n) cap *= 2;
        uint8_t *grown = realloc(p->out, cap);
        if (!grown) return -1;
        p->out = grown, p->out_cap = cap;
    }
    memcpy(p->out + p->out_len, data, n);
    p->out_len += n;
    return 0;
}

/* Send what is queued; 0 when all went (or some waits for EPOLLOUT), -1 when the peer is gone. */
static int peer_flush(struct peer *p) {
    while (p->out_off < p->out_len) {
        ssize_t n = send(p->fd, p->out + p->out_off, p->out_len - p->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        if (n < 0) return -1;
        p->out_off += (size_t)n;
    }
    if (p->out_off == p->out_len) p->out_off = p->out_len = 0;
    int want = p->out_len > 0;
    if (want != p->out_watched) {
        p->out_watched = want;
        watch(EPOLL_CTL_MOD, p->fd, want ? EPOLLIN | EPOLLOUT : EPOLLIN, p);
    }
    return p->closing && !want ? -1 : 0;
}

/* ws: the request head is complete at `end`: answer it (101 or 400). */
static int ws_upgrade(struct peer *p, char *end) {
    char accept[29], answer[256];
    size_t len;
    *end = 0;
    const char *key = header((char *)p->in, "sec-websocket-key", &len);
    if (!key || len == 0 || len > 64) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n";
        p->closing = 1;
        return queue(p, bad, sizeof bad - 1);
    }
    accept_key(key, len, accept);
    int n = snprintf(answer, sizeof answer,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
    p->open = 1;
    return queue(p, answer, (size_t)n);
}

/* ws: echo every complete frame in the buffer; -1 on a protocol error. */
static int ws_echo(struct peer *p) {
    size_t at = 0;
    while (!p->closing && p->in_len - at >= 2) {
        uint8_t *f = p->in + at, head[4];
        uint64_t n = f[1] & 127;
        size_t h = n == 126 ? 4 : n == 127 ? 10 : 2;
        if (!(f[1] & 0x80)) return -1; /* client frames must be masked */
        if (p->in_len - at < h + 4) break;
        if (n == 126) n = (uint64_t)f[2] << 8 | f[3];
        if (n == 127) return -1; /* no such sizes here */
        if (n > IN_CAP - 16) return -1;
        if (p->in_len - at < h + 4 + n) break;
        int opcode = f[0] & 15;
        uint8_t *mask = f + h, *payload = f + h + 4;
        for (size_t i = 0; i < n; i++) payload[i] ^= mask[i % 4];
        if (opcode != 10) {
            head[0] = opcode == 9 ? (uint8_t)0x8A : f[0];
            size_t hn = 2;
            if (n < 126) head[1] = (uint8_t)n;
            else head[1] = 126, head[2] = (uint8_t)(n >> 8), head[3] = (uint8_t)n, hn = 4;
            if (queue(p, head, hn) < 0 || queue(p, payload, n) < 0) return -1;
        }
        if (opcode == 8) p->closing = 1;
        at += h + 4 + n;
    }
    memmove(p->in, p->in + at, p->in_len -= at);
    return 0;
}

/* sse: one event per send() while the socket takes them (at most `budget`). */
static int sse_stream(struct peer *p, int budget) {
    char event[64];
    if (p->out_len) { /* the rest of a partly sent event first */
        if (peer_flush(p) < 0) return -1;
        if (p->out_len) return 0;
    }
    while (budget-- > 0 && !(p->windowed && p->sequence - p->credited >= (uint64_t)opt.window)) {
        int n = snprintf(event + 4, sizeof event - 4, "data: %016llx %015llu\n\n",
                         (unsigned long long)now_ns(), (unsigned long long)p->sequence);
        char *start = event + 4;
        size_t len = (size_t)n;
        if (!p->http10) {
            memcpy(event, "28\r\n", 4); /* 0x28 = 40 bytes: the event */
            memcpy(event + 4 + n, "\r\n", 2);
            start = event, len += 6;
        }
        ssize_t sent = send(p->fd, start, len, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR) continue;
        if (sent < 0 && errno == EAGAIN) break;
        if (sent < 0) return -1;
        p->sequence++;
        if ((size_t)sent < len) { /* the rest goes first next time */
            if (queue(p, start + sent, len - (size_t)sent) < 0) return -1;
            break;
        }
    }
    /* EPOLLOUT while the socket may take more; not while the window is closed */
    int want = p->out_len || !p->windowed || p->sequence - p->credited < (uint64_t)opt.window;
    if (want != p->out_watched) {
        p->out_watched = want;
        watch(EPOLL_CTL_MOD, p->fd, want ? EPOLLIN | EPOLLOUT : EPOLLIN, p);
    }
    return 0;
}

/* sse: `GET …stream=<hex token>-<index>` puts the stream under the credits' window. */
static void sse_stream_id(struct peer *p, char *line) {
    char *at = strstr(line, "stream="), *end;
    if (!at || credit_fd < 0) return;
    uint64_t token = strtoull(at + 7, &end, 16);
    if (*end != '-') return;
    long index = strtol(end + 1, &end, 10);
    if (index < 0 || index >= MAX_STREAMS) return;
    p->token = token, p->index = (int)index, p->windowed = 1;
    streams[index] = p;
}

/* sse: the clients' credits; a stream whose window opens is watched for EPOLLOUT again. */
static void credits_readable(void) {
    struct credit batch[CREDIT_BATCH];
    for (;;) {
        ssize_t n = recv(credit_fd, batch, sizeof batch, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        for (size_t i = 0; i < (size_t)n / sizeof *batch; i++) {
            struct credit *c = &batch[i];
            struct peer *p = c->index < MAX_STREAMS ? streams[c->index] : NULL;
            if (!p || p->token != c->token || c->received <= p->credited) continue;
            p->credited = c->received;
            if (!p->out_watched) {
                p->out_watched = 1;
                watch(EPOLL_CTL_MOD, p->fd, EPOLLIN | EPOLLOUT, p);
            }
        }
    }
}

static int peer_readable(struct peer *p) {
    int ws = kind == K_WS;
    for (;;) {
        if (p->in_len == IN_CAP) return -1;
        ssize_t n = recv(p->fd, p->in + p->in_len, IN_CAP - p->in_len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return 0;
        if (n <= 0) return -1;
        if (kind == K_TCP) { /* echo: send at once; what the socket does not take waits */
            if (queue(p, p->in, (size_t)n) < 0 || p->out_len > OUT_LIMIT || peer_flush(p) < 0)
                return -1;
            if ((size_t)n < IN_CAP) return 0; /* all there was (epoll says when there is more) */
            continue;
        }
        if (!ws && p->open) continue; /* the SSE client says nothing more: drop it */
        p->in_len += (size_t)n;
        if (!p->open && !p->closing) {
            char *end = memmem(p->in, p->in_len, "\r\n\r\n", 4);
            if (!end) continue;
            size_t used = (size_t)(end + 4 - (char *)p->in);
            if (ws) {
                if (ws_upgrade(p, end) < 0) return -1;
            } else {
                static const char head11[] =
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
                static const char head10[] =
                    "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n"
                    "Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
                char *eol = memmem(p->in, used, "\r\n", 2);
                p->http10 = eol && eol - (char *)p->in >= 8 && memcmp(eol - 8, "HTTP/1.0", 8) == 0;
                if (eol) {
                    *eol = 0;
                    sse_stream_id(p, (char *)p->in);
                }
                p->open = 1;
                if (p->http10 ? queue(p, head10, sizeof head10 - 1)
                              : queue(p, head11, sizeof head11 - 1))
                    return -1;
            }
            memmove(p->in, p->in + used, p->in_len -= used);
        }
        if (ws && p->open && (ws_echo(p) < 0 || p->out_len > OUT_LIMIT)) return -1;
        if (!ws && p->open) p->in_len = 0;
        if (peer_flush(p) < 0) return -1;
    }
}

static int run_server(void) {
    int sse = kind == K_SSE;
    struct sockaddr_in at = address(opt.host, opt.port);
    struct epoll_event ready[MAX_EVENTS];
    int one = 1, listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0) fatal("socket");
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&at, sizeof at) < 0) fatal("bind");
    if (listen(listener, 4096) < 0) fatal("listen");
    watch(EPOLL_CTL_ADD, listener, EPOLLIN, NULL);
    if (sse && opt.credits) {
        struct sockaddr_un at_credits = {.sun_family = AF_UNIX};
        snprintf(at_credits.sun_path, sizeof at_credits.sun_path, "%s", opt.credits);
        unlink(opt.credits);
        credit_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (credit_fd < 0 || bind(credit_fd, (struct sockaddr *)&at_credits, sizeof at_credits) < 0)
            fatal(opt.credits);
        watch(EPOLL_CTL_ADD, credit_fd, EPOLLIN, &credit_marker);
    }
    fprintf(stderr, "streamload %s listening on %s:%d\n", opt.mode, opt.host, opt.port);
    for (;;) {
        int n = epoll_wait(epoll_fd, ready, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) fatal("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct peer *p = ready[i].data.ptr;
            if (p == (void *)&credit_marker) {
                credits_readable();
                continue;
            }
            if (!p) {
                int fd;
                while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct peer *fresh = calloc(1, sizeof *fresh);
                    if (!fresh) {
                        close(fd);
                        continue;
                    }
                    fresh->fd = fd;
                    fresh->open = kind == K_TCP; /* no head to read first */
                    no_delay(fd);
                    watch(EPOLL_CTL_ADD, fd, EPOLLIN, fresh);
                }
                continue;
            }
            int gone = 0;
            if (ready[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) gone = peer_readable(p) < 0;
            if (!gone && (ready[i].events & EPOLLOUT))
                gone = (sse && p->open ? sse_stream(p, 64) : peer_flush(p)) < 0;
            if (!gone && sse && p->open && !p->out_watched) gone = sse_stream(p, 64) < 0;
            if (gone) peer_close(p);
        }
    }
}

/* ---- UDP: the client and the echo server ----------------------------------------------- */

struct dgram {
    int fd, state, waiting; /* state: C_HEAD until its first echo, then C_OPEN (or C_DEAD) */
    uint32_t index;
    uint64_t sequence, since; /* the outstanding datagram's number and when it left (ns) */
    uint8_t sent[MAX_SIZE];
};

/* udp: send the next datagram, with a new sequence number. A send that fails is an error but
 * not the socket's end: the datagram counts as outstanding and is retried after --retry. */
static void udp_send(struct dgram *d) {
    uint32_t seed = next_random();
    d->sequence++;
    memcpy(d->sent, &d->sequence, 8);
    memcpy(d->sent + 8, &d->index, 4);
    for (size_t i = 12; i < (size_t)opt.size; i++) d->sent[i] = (uint8_t)('a' + (seed + i) % 26);
    d->waiting = 1;
    d->since = now_ns();
    ssize_t n;
    do n = send(d->fd, d->sent, (size_t)opt.size, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != ENOBUFS) fail(NULL, E_WRITE, "%s", strerror(errno));
}

/* udp: one datagram from the socket (epoll reports it again while more wait). */
static void udp_readable(struct dgram *d, int sending) {
    uint8_t data[MAX_SIZE + 1];
    uint64_t sequence;
    ssize_t n = recv(d->fd, data, sizeof data, 0);
    if (n < 0) { /* ECONNREFUSED: an ICMP port unreachable for an earlier datagram */
        if (errno != EAGAIN && errno != EINTR) fail(NULL, E_READ, "%s", strerror(errno));
        return;
    }
    uint64_t now = now_ns();
    if (n != opt.size) {
        fail(NULL, E_PROTOCOL, "a %zd-byte datagram for a %d-byte one", n, opt.size);
        return;
    }
    memcpy(&sequence, data, 8);
    if (d->waiting && sequence == d->sequence && memcmp(data, d->sent, (size_t)n) == 0) {
        d->waiting = 0;
        if (d->state == C_HEAD) {
            d->state = C_OPEN;
            open_count++;
            return;
        }
        if (counting) bytes_in += (uint64_t)n;
        record(d->since, now);
        if (sending) udp_send(d);
    } else if (sequence < d->sequence) {
        if (counting) late++; /* given up already: its successor is out */
    } else {
        fail(NULL, E_PROTOCOL, "the echo differs from the datagram sent");
    }
}

/* udp: retry what waited longer than --retry; in the measured window that is a loss. */
static void udp_retry(struct dgram *dgrams, uint64_t now) {
    uint64_t retry = (uint64_t)(opt.retry * 1e9);
    for (int i = 0; i < opt.connections; i++) {
        struct dgram *d = &dgrams[i];
        if (d->state == C_DEAD || !d->waiting || now - d->since <= retry) continue;
        if (counting && d->state == C_OPEN) lost++;
        udp_send(d);
    }
}

static int run_udp_client(void) {
    struct sockaddr_in to = address(opt.host, opt.port);
    struct epoll_event ready[MAX_EVENTS];
    struct dgram *dgrams = calloc((size_t)opt.connections, sizeof *dgrams);
    uint64_t tick = 10000000u; /* how often outstanding datagrams are looked at (ns) */
    if (!dgrams) fatal("calloc");
    for (int i = 0; i < opt.connections; i++) {
        struct dgram *d = &dgrams[i];
        d->index = (uint32_t)i;
        d->state = C_HEAD;
        d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (d->fd < 0) fatal("socket");
        if (connect(d->fd, (struct sockaddr *)&to, sizeof to) < 0) fatal("connect");
        watch(EPOLL_CTL_ADD, d->fd, EPOLLIN, d);
        udp_send(d);
    }
    /* Phase 1: one echo on every socket (the proxy's sessions exist), within --timeout. */
    uint64_t now = now_ns(), deadline = now + (uint64_t)(opt.timeout * 1e9);
    while (open_count < opt.connections && now < deadline) {
        int n = epoll_wait(epoll_fd, ready, MAX_EVENTS, (int)(tick / 1000000));
        if (n < 0 && errno != EINTR) fatal("epoll_wait");
        for (int i = 0; i < n; i++) udp_readable(ready[i].data.ptr, 0);
        udp_retry(dgrams, now = now_ns());
    }
    for (int i = 0; i < opt.connections; i++) {
        struct dgram *d = &dgrams[i];
        if (d->state == C_OPEN) continue;
        fail(NULL, E_HANDSHAKE, "no echo within %.0f s", opt.timeout);
        close(d->fd);
        d->state = C_DEAD;
    }
    /* Phase 2: the measured window. */
    uint64_t cpu_start = cpu_us(), start = now_ns(), end = start + (uint64_t)(opt.duration * 1e9);
    uint64_t next_check = start + tick;
    counting = 1;
    for (int i = 0; i < opt.connections; i++)
        if (dgrams[i].state == C_OPEN) udp_send(&dgrams[i]);
    for (now = start; open_count > 0 && now < end;) {
        uint64_t until = next_check < end ? next_check : end;
        int n = epoll_wait(epoll_fd, ready, MAX_EVENTS, (int)((until - now) / 1000000) + 1);
        if (n < 0 && errno != EINTR) fatal("epoll_wait");
        for (int i = 0; i < n; i++) udp_readable(ready[i].data.ptr, 1);
        now = now_ns();
        if (now >= next_check) {
            next_check = now + tick;
            udp_retry(dgrams, now);
        }
    }
    counting = 0;
    uint64_t stop = now_ns(), cpu = cpu_us() - cpu_start;
    for (int i = 0; i < opt.connections; i++)
        if (dgrams[i].state != C_DEAD) close(dgrams[i].fd);
    print_summary(stop - start, cpu);
    return 0;
}

static int run_udp_server(void) {
    enum { BATCH = 64 };
    static uint8_t data[BATCH][MAX_SIZE];
    struct sockaddr_in at = address(opt.host, opt.port), from[BATCH];
    struct mmsghdr in[BATCH];
    struct iovec vec[BATCH];
    int buffer = 4 << 20, fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fatal("socket");
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
    if (bind(fd, (struct sockaddr *)&at, sizeof at) < 0) fatal("bind");
    fprintf(stderr, "streamload %s listening on %s:%d\n", opt.mode, opt.host, opt.port);
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            vec[i] = (struct iovec){.iov_base = data[i], .iov_len = sizeof data[i]};
            in[i].msg_hdr = (struct msghdr){.msg_name = &from[i], .msg_namelen = sizeof from[i],
                                            .msg_iov = &vec[i], .msg_iovlen = 1};
        }
        /* blocks for the first datagram, then takes what else is queued (up to BATCH) */
        int n = recvmmsg(fd, in, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0 && (errno == EINTR || errno == ECONNREFUSED)) continue;
        if (n < 0) fatal("recvmmsg");
        for (int i = 0; i < n; i++) vec[i].iov_len = in[i].msg_len; /* send back as long */
        for (int done = 0; done < n;) {
            int k = sendmmsg(fd, in + done, (unsigned)(n - done), 0);
            if (k < 0 && errno == EINTR) continue;
            done += k < 0 ? 1 : k; /* a datagram that cannot go is dropped, as UDP may */
        }
    }
}

/* ---- self-test and arguments ----------------------------------------------------------- */

static int self_test(void) {
    uint8_t digest[20];
    char text[29], accept[29];
    sha1((const uint8_t *)"abc", 3, digest);
    base64(digest, 20, text);
    accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, accept);
    int good = strcmp(text, "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=") == 0 &&
               strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0 &&
               hist_index(1023) == 1023 && hist_value(hist_index(1024)) == 1025 &&
               hist_value(hist_index(5000)) >= 5000 && hist_value(hist_index(5000)) < 5012;
    printf("self-test %s (sha1(abc) %s, accept %s)\n", good ? "ok" : "FAILED", text, accept);
    return good ? 0 : 1;
}

__attribute__((noreturn)) static void usage(void) {
    fprintf(stderr, "usage: streamload --mode ws-client|ws-echo-server|sse-client|sse-server|"
                    "tcp-client|tcp-echo-server|udp-client|udp-echo-server "
                    "--port PORT [--host IPV4] [--path /p] [--connections N] [--duration S] "
                    "[--size BYTES] [--timeout S] [--retry S] [--credits SOCKET] "
                    "[--window EVENTS]\n"
                    "       streamload --self-test\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *name = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(name, "--self-test") == 0) return self_test();
        if (!value) usage();
        if (strcmp(name, "--mode") == 0) opt.mode = value;
        else if (strcmp(name, "--host") == 0) opt.host = value;
        else if (strcmp(name, "--path") == 0) opt.path = value;
        else if (strcmp(name, "--port") == 0) opt.port = atoi(value);
        else if (strcmp(name, "--connections") == 0) opt.connections = atoi(value);
        else if (strcmp(name, "--duration") == 0) opt.duration = atof(value);
        else if (strcmp(name, "--size") == 0) opt.size = atoi(value);
        else if (strcmp(name, "--timeout") == 0) opt.timeout = atof(value);
        else if (strcmp(name, "--retry") == 0) opt.retry = atof(value);
        else if (strcmp(name, "--credits") == 0) opt.credits = value;
        else if (strcmp(name, "--window") == 0) opt.window = atoi(value);
        else usage();
        i++;
    }
    static const struct {
        const char *name;
        int kind, server;
    } modes[] = {
        {"ws-client", K_WS, 0},   {"ws-echo-server", K_WS, 1},   {"sse-client", K_SSE, 0},
        {"sse-server", K_SSE, 1}, {"tcp-client", K_TCP, 0},      {"tcp-echo-server", K_TCP, 1},
        {"udp-client", K_UDP, 0}, {"udp-echo-server", K_UDP, 1},
    };
    int mode = -1;
    for (size_t m = 0; opt.mode && m < sizeof modes / sizeof *modes; m++)
        if (strcmp(opt.mode, modes[m].name) == 0) mode = (int)m;
    if (mode < 0 || opt.port < 1 || opt.port > 65535 || opt.connections < 1 ||
        opt.duration <= 0 || opt.timeout <= 0 || opt.retry <= 0 || opt.size < 1 ||
        opt.size > MAX_SIZE || (modes[mode].kind == K_UDP && opt.size < 12) ||
        strlen(opt.path) > 256 || opt.path[0] != '/' || opt.window < 0 ||
        (opt.credits && (strlen(opt.credits) >= sizeof((struct sockaddr_un *)0)->sun_path ||
                         (strcmp(opt.mode, "sse-server") == 0 && opt.window < 1))))
        usage();
    kind = modes[mode].kind;
    signal(SIGPIPE, SIG_IGN);
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0) fatal("epoll_create1");
    if (kind == K_UDP) return modes[mode].server ? run_udp_server() : run_udp_client();
    return modes[mode].server ? run_server() : run_client();
}
