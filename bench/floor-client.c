/*
 * The stream burst with as little client as possible: CLIENTS connections
 * started at once from one thread with epoll, each sending one GET and
 * reading the response to its end. Prints the time from each connect to the
 * first event (the first "id: " or "event: " in the body of a 200 response)
 * at p50 / p90 / p99, and how many responses were a 200 holding a done
 * event. bench/streams-floor.sh runs it beside keel-bench's NIO client.
 *
 *   floor-client HOST PORT PATHS CLIENTS [BEARER]
 *
 * PATHS: one path, or several separated by commas, taken in turn.
 * Exits 0 when every response was complete, 1 otherwise.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PATHS 256
#define REQUEST_SIZE 4096

struct conn {
    int fd;
    int sent;
    double started;
    double first;   /* ms from connect to first event; < 0 until seen */
    char *data;     /* the response so far, NUL-terminated */
    size_t length, capacity;
    int state;      /* 0: open; 1: closed by the server; 2: failed */
};

static char *requests[MAX_PATHS];
static int request_lengths[MAX_PATHS], request_count;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000.0 + t.tv_nsec / 1e6;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(const double *sorted, int count, double p) {
    int index = (int)(p * (count - 1) + 0.5);
    if (index < 0) index = 0;
    if (index >= count) index = count - 1;
    return sorted[index];
}

static int is_ok(const struct conn *c) {
    return c->length >= 12 && strncmp(c->data, "HTTP/1.1 200", 12) == 0;
}

static void finish(struct conn *c, int state) {
    c->state = state;
    close(c->fd);
}

/* Handles what epoll reports within timeout_ms; returns how many streams
   ended, or -1 when nothing happened before the timeout. */
static int serve(int poll, struct conn *conns, int timeout_ms) {
    struct epoll_event ready[256];
    static char buffer[65536];
    int count = epoll_wait(poll, ready, 256, timeout_ms);
    if (count < 0) {
        if (errno == EINTR) return 0;
        perror("epoll_wait");
        exit(1);
    }
    if (count == 0) return timeout_ms > 0 ? -1 : 0;
    int ended = 0;
    for (int k = 0; k < count; k++) {
        unsigned index = ready[k].data.u32;
        struct conn *c = &conns[index];
        if (c->state) continue;
        if (!c->sent && (ready[k].events & EPOLLOUT)) {
            int which = (int)(index % (unsigned)request_count);
            if (write(c->fd, requests[which], request_lengths[which]) != request_lengths[which]) {
                finish(c, 2);
                ended++;
                continue;
            }
            c->sent = 1;
            struct epoll_event event = {.events = EPOLLIN, .data.u32 = index};
            epoll_ctl(poll, EPOLL_CTL_MOD, c->fd, &event);
        }
        if (!(ready[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
        for (;;) {
            ssize_t n = read(c->fd, buffer, sizeof buffer);
            if (n > 0) {
                if (c->length + n + 1 > c->capacity) {
                    c->capacity = (c->length + n + 1) * 2;
                    c->data = realloc(c->data, c->capacity);
                    if (!c->data) { perror("realloc"); exit(1); }
                }
                memcpy(c->data + c->length, buffer, n);
                c->length += n;
                c->data[c->length] = 0;
                if (c->first < 0 && is_ok(c)) {
                    const char *body = strstr(c->data, "\r\n\r\n");
                    if (body && (strstr(body, "id: ") || strstr(body, "event: "))) c->first = now_ms() - c->started;
                }
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            finish(c, n == 0 ? 1 : 2);
            ended++;
            break;
        }
    }
    return ended;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT PATHS CLIENTS [BEARER]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *bearer = argc > 5 ? argv[5] : NULL;
    int port = atoi(argv[2]), clients = atoi(argv[4]);
    if (clients <= 0) { fprintf(stderr, "CLIENTS must be positive\n"); return 2; }
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
        fprintf(stderr, "HOST must be an IPv4 address: %s\n", host);
        return 2;
    }
    char *paths = strdup(argv[3]);
    for (char *path = strtok(paths, ","); path && request_count < MAX_PATHS; path = strtok(NULL, ",")) {
        char *request = malloc(REQUEST_SIZE);
        if (!request) { perror("malloc"); return 1; }
        int length = snprintf(request, REQUEST_SIZE,
            "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\nConnection: close\r\n%s%s%s\r\n",
            path, host, port, bearer ? "Authorization: Bearer " : "", bearer ? bearer : "", bearer ? "\r\n" : "");
        if (length < 0 || length >= REQUEST_SIZE) { fprintf(stderr, "request for %s is too long\n", path); return 2; }
        requests[request_count] = request;
        request_lengths[request_count++] = length;
    }
    if (request_count == 0) { fprintf(stderr, "no path given\n"); return 2; }

    int poll = epoll_create1(0);
    struct conn *conns = calloc(clients, sizeof *conns);
    if (poll < 0 || !conns) { perror("setup"); return 1; }
    int open = 0;
    for (int i = 0; i < clients; i++) {
        struct conn *c = &conns[i];
        c->first = -1;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c->fd < 0) { perror("socket"); return 1; }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->started = now_ms();
        if (connect(c->fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS) {
            perror("connect");
            return 1;
        }
        struct epoll_event event = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (unsigned)i};
        epoll_ctl(poll, EPOLL_CTL_ADD, c->fd, &event);
        open++;
        /* Every few connects, serve the connections already up, as a client
           with an event loop would, rather than only after the last one. */
        if (i % 32 == 31) open -= serve(poll, conns, 0);
    }
    while (open > 0) {
        int ended = serve(poll, conns, 120000);
        if (ended < 0) {
            fprintf(stderr, "no progress in 120 s, %d streams still open\n", open);
            break;
        }
        open -= ended;
    }

    double *firsts = malloc(clients * sizeof *firsts);
    int seen = 0, complete = 0, failed = 0;
    for (int i = 0; i < clients; i++) {
        struct conn *c = &conns[i];
        if (c->first >= 0) firsts[seen++] = c->first;
        if (c->state == 1 && is_ok(c) && strstr(c->data, "event: done")) complete++;
        else failed++;
    }
    qsort(firsts, seen, sizeof *firsts, compare);
    printf("streams: %d, complete %d, failed or incomplete %d, first event seen %d\n", clients, complete, failed, seen);
    if (seen > 0)
        printf("first event ms: p50 %.1f / p90 %.1f / p99 %.1f / max %.1f\n",
               percentile(firsts, seen, 0.50), percentile(firsts, seen, 0.90), percentile(firsts, seen, 0.99), firsts[seen - 1]);
    return complete == clients ? 0 : 1;
}
