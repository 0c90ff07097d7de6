/* unixget SOCKET METHOD PATH: one HTTP/1.1 request over a unix socket, the whole answer on
 * stdout. Built static by tests/support/unixget.py, to run in a busybox container (which has
 * no client that speaks over a unix socket) as a caller of dockgate's socket mounted into it. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: unixget SOCKET METHOD PATH\n");
        return 2;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    strncpy(address.sun_path, argv[1], sizeof address.sun_path - 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        perror("unixget: connect");
        return 1;
    }
    char request[4096];
    int length = snprintf(request, sizeof request,
                          "%s %s HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n",
                          argv[2], argv[3]);
    if (length <= 0 || length >= (int)sizeof request) return 2;
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
