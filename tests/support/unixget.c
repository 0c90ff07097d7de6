/* unixget SOCKET METHOD PATH [COUNT]: COUNT (default 1) HTTP/1.1 requests over a unix
 * socket, pipelined in one write (all but the last keep-alive), every answer on stdout. Built static by tests/support/unixget.py, to run in a busybox container (which has
 * no client that speaks over a unix socket) as a caller of dockgate's socket mounted into it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: unixget SOCKET METHOD PATH [COUNT]\n");
        return 2;
    }
    int count = argc == 5 ? atoi(argv[4]) : 1;
    if (count < 1 || count > 16) return 2;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    strncpy(address.sun_path, argv[1], sizeof address.sun_path - 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        perror("unixget: connect");
        return 1;
    }
    char request[16 * 4096];
    int length = 0;
    for (int i = 1; i <= count; i++) {
        int n = snprintf(request + length, sizeof request - length,
                         "%s %s HTTP/1.1\r\nHost: docker\r\nConnection: %s\r\n\r\n",
                         argv[2], argv[3], i == count ? "close" : "keep-alive");
        if (n <= 0 || n >= (int)(sizeof request - length)) return 2;
        length += n;
    }
    for (int sent = 0; sent < length;) {
        ssize_t n = write(fd, request + sent, length - sent);
        if (n <= 0) {
            perror("unixget: write");
            return 1;
        }
        sent += n;
    }
    char buffer[65536];
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n < 0) {
            perror("unixget: read");
            return 1;
        }
        if (n == 0) break;
        fwrite(buffer, 1, n, stdout);
    }
    return 0;
}
