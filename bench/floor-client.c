/*
 * The stream burst with as little client as possible: CLIENTS connections
 * started at once from one thread with epoll, each sending one GET and
 * reading the response to its end. Prints the time from each connect to the
 * first event (the first "id: " or "event: " in the response) at p50 / p90 /
 * p99, and how many responses were a 200 holding a done event. bench/streams-floor.sh uses
 * it to see how much of a stream burst's figure is the measuring client's
 * own cost (keel-bench's NIO client against the same server).
 *
 *   floor-client HOST PORT PATHS CLIENTS [BEARER]
 *
 * PATHS: one path, or several separated by commas, taken in turn.
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

struct conn {
    int fd;
    int sent;
    double started;
    double first;   /* ms from connect to first event; < 0 until seen */
    char *data;     /* the response so far */
    size_t length, capacity;
    int done;       /* 1: closed by the server; 2: read error */
};

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
    int index = (int)(p * count + 0.5) - 1;
    if (index < 0) index = 0;
    if (index >= count) index = count - 1;
    return sorted[index];
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT PATHS CLIENTS [BEARER]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *bearer = argc > 5 ? argv[5] : NULL;
    int port = atoi(argv[2]), clients = atoi(argv[4]);
    if (clients <= 0) { fprintf(stderr, "CLIENTS must be positive\n"); return 2; }
    /* One request per path. */
    char *paths = strdup(argv[3]);
    char *requests[256];
    int request_lengths[256], request_count = 0;
    for (char *path = strtok(paths, ","); path && request_count < 256; path = strtok(NULL, ",")) {
        char *request = malloc(4096);
        request_lengths[request_count] = snprintf(request, 4096,
            "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\nConnection: close\r\n%s%s%s\r\n",
            path, host, port, bearer ? "Authorization: Bearer " : "", bearer ? bearer : "", bearer ? "\r\n" : "");
        requests[request_count++] = request;
    }
    if (request_count == 0) { fprintf(stderr, "no path given\n"); return 2; }
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
        fprintf(stderr, "HOST must be an IPv4 address: %s\n", host);
        return 2;
    }

    int poll = epoll_create1(0);
    struct conn *conns = calloc(clients, sizeof *conns);
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
    }

    int open = clients;
    struct epoll_event ready[256];
    char buffer[65536];
    while (open > 0) {
        int count = epoll_wait(poll, ready, 256, 120000);
        if (count == 0) { fprintf(stderr, "no progress in 120 s, %d streams still open\n", open); break; }
        for (int k = 0; k < count; k++) {
            struct conn *c = &conns[ready[k].data.u32];
            if (c->done) continue;
            if (!c->sent && (ready[k].events & EPOLLOUT)) {
                int which = (int)(ready[k].data.u32 % (unsigned)request_count);
                if (write(c->fd, requests[which], request_lengths[which]) != request_lengths[which]) {
                    c->done = 2; open--; close(c->fd); continue;
                }
                c->sent = 1;
                struct epoll_event event = {.events = EPOLLIN, .data.u32 = ready[k].data.u32};
                epoll_ctl(poll, EPOLL_CTL_MOD, c->fd, &event);
            }
            if (!(ready[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            for (;;) {
                ssize_t n = read(c->fd, buffer, sizeof buffer);
                if (n > 0) {
                    if (c->length + n + 1 > c->capacity) {
                        c->capacity = (c->length + n + 1) * 2;
                        c->data = realloc(c->data, c->capacity);
                    }
                    memcpy(c->data + c->length, buffer, n);
                    c->length += n;
                    c->data[c->length] = 0;
                    if (c->first < 0 && (strstr(c->data, "id: ") || strstr(c->data, "event: ")))
                        c->first = now_ms() - c->started;
                    continue;
                }
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                c->done = n == 0 ? 1 : 2;
                open--;
                close(c->fd);
                break;
            }
        }
    }

    double *firsts = malloc(clients * sizeof *firsts);
    int seen = 0, complete = 0, failed = 0;
    for (int i = 0; i < clients; i++) {
        if (conns[i].first >= 0) firsts[seen++] = conns[i].first;
        if (conns[i].data && strncmp(conns[i].data, "HTTP/1.1 200", 12) == 0 && strstr(conns[i].data, "event: done")) complete++;
        if (conns[i].done == 2) failed++;
    }
    qsort(firsts, seen, sizeof *firsts, compare);
    printf("streams: %d, complete %d, failed %d, first event seen %d\n", clients, complete, failed, seen);
    if (seen > 0)
        printf("first event ms: p50 %.1f / p90 %.1f / p99 %.1f / max %.1f\n",
               percentile(firsts, seen, 0.50), percentile(firsts, seen, 0.90), percentile(firsts, seen, 0.99), firsts[seen - 1]);
    return complete == clients ? 0 : 1;
}
