// The floor of "a request with a new reply channel to a child" (docs/benchmarks/notes.md): per
// request, a socket pair, one end passed to a child with SCM_RIGHTS, an 8-byte answer on it and
// the closes: the nine system calls ipc-channel makes, and nothing else.
//
//     gcc -O2 -o /tmp/request benches/floors/request.c && /tmp/request 20000 0
//
// The second argument: 0, both sides sleep in recvmsg; 1, both poll (MSG_DONTWAIT).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int polling;

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static ssize_t receive(int fd, struct msghdr *message) {
    ssize_t got;
    do {
        got = recvmsg(fd, message, polling ? MSG_DONTWAIT : 0);
    } while (got < 0);
    return got;
}

static void send_descriptor(int socket, int fd) {
    char bytes[8] = {0};
    struct iovec io = {bytes, sizeof bytes};
    char control[CMSG_SPACE(sizeof fd)];
    struct msghdr message = {0};
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof fd);
    memcpy(CMSG_DATA(header), &fd, sizeof fd);
    sendmsg(socket, &message, 0);
}

static int receive_descriptor(int socket) {
    char bytes[8];
    struct iovec io = {bytes, sizeof bytes};
    char control[CMSG_SPACE(sizeof(int))];
    struct msghdr message = {0};
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    if (receive(socket, &message) <= 0) return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&message)), sizeof fd);
    return fd;
}

static double cpu_ns(const struct rusage *usage) {
    return (usage->ru_utime.tv_sec + usage->ru_stime.tv_sec) * 1e9 +
           (usage->ru_utime.tv_usec + usage->ru_stime.tv_usec) * 1e3;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s REQUESTS POLLING(0|1)\n", argv[0]);
        return 2;
    }
    int requests = atoi(argv[1]);
    polling = atoi(argv[2]);
    int to_child[2];
    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, to_child);
    pid_t child = fork();
    if (child == 0) {
        close(to_child[0]);
        for (;;) {
            int reply = receive_descriptor(to_child[1]);
            if (reply < 0) _exit(0);
            char answer[8] = {1};
            send(reply, answer, sizeof answer, 0);
            close(reply);
        }
    }
    close(to_child[1]);
    double start = now_ns();
    for (int i = 0; i < requests; i++) {
        int reply[2];
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, reply);
        send_descriptor(to_child[0], reply[1]);
        close(reply[1]);
        char answer[8];
        struct iovec io = {answer, sizeof answer};
        struct msghdr message = {0};
        message.msg_iov = &io;
        message.msg_iovlen = 1;
        receive(reply[0], &message);
        close(reply[0]);
    }
    double wall = (now_ns() - start) / requests;
    close(to_child[0]);
    int status;
    struct rusage of_child, of_parent;
    wait4(child, &status, 0, &of_child);
    getrusage(RUSAGE_SELF, &of_parent);
    printf("%s: %.0f ns wall, %.0f ns CPU of both per request\n", polling ? "polling" : "sleeping", wall,
           (cpu_ns(&of_parent) + cpu_ns(&of_child)) / requests);
    return 0;
}
