/*
 * LD_PRELOAD shim that makes wrk present a TLS client certificate.
 *
 * wrk speaks https but has no option for a client certificate, and OpenSSL's configuration file
 * cannot add one to every context. wrk creates its one SSL_CTX with SSL_CTX_new; this wraps that
 * call and loads the certificate chain and key named by DGB_CLIENT_CERT and DGB_CLIENT_KEY into
 * the new context. Built and used by bench/loads.py for the dockgate+mtls target only; wrk itself
 * is unchanged (it still does not verify the server, as with every https URL).
 *
 *   cc -shared -fPIC -o wrk_client_cert.so wrk_client_cert.c -ldl
 *   DGB_CLIENT_CERT=client.pem DGB_CLIENT_KEY=client.key LD_PRELOAD=./wrk_client_cert.so wrk ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;
#define DGB_SSL_FILETYPE_PEM 1 /* SSL_FILETYPE_PEM, without needing OpenSSL's headers */

int SSL_CTX_use_certificate_chain_file(SSL_CTX *ctx, const char *file);
int SSL_CTX_use_PrivateKey_file(SSL_CTX *ctx, const char *file, int type);
int SSL_CTX_check_private_key(const SSL_CTX *ctx);

SSL_CTX *SSL_CTX_new(const SSL_METHOD *method)
{
    SSL_CTX *(*real)(const SSL_METHOD *) =
        (SSL_CTX * (*)(const SSL_METHOD *)) dlsym(RTLD_NEXT, "SSL_CTX_new");
    if (real == NULL) {
        fprintf(stderr, "wrk_client_cert: SSL_CTX_new not found\n");
        abort();
    }
    SSL_CTX *ctx = real(method);
    const char *cert = getenv("DGB_CLIENT_CERT");
    const char *key = getenv("DGB_CLIENT_KEY");
    if (ctx != NULL && cert != NULL && key != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1
            || SSL_CTX_use_PrivateKey_file(ctx, key, DGB_SSL_FILETYPE_PEM) != 1
            || SSL_CTX_check_private_key(ctx) != 1) {
            fprintf(stderr, "wrk_client_cert: cannot load %s / %s\n", cert, key);
            abort();
        }
    }
    return ctx;
}
