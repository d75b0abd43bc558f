/* fsign: a test helper that runs flux-security's own envelope functions,
 * so that the Go tests in fluxbridge/sign compare with the real library.
 * It is compiled by those tests with gcc against libflux-security and is
 * never part of the product.
 *
 *   fsign CONFIG wrap MECH USERID      stdin: payload; stdout: J
 *   fsign CONFIG unwrap                stdin: J; verify with allowed-types
 *   fsign CONFIG batch                 stdin: lines "verify|noverify HEX(J)"
 *
 * unwrap prints "ok MECH USERID BASE64(PAYLOAD)" or "err MESSAGE";
 * batch prints one such line per input line. CONFIG is the glob of
 * flux-security TOML files (flux_security_configure).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <flux/security/context.h>
#include <flux/security/sign.h>

static char *read_all (FILE *f, size_t *lenp)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc (cap + 1);
    size_t n;
    while (buf && (n = fread (buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            cap *= 2;
            buf = realloc (buf, cap + 1);
        }
    }
    if (!buf) {
        perror ("fsign");
        exit (2);
    }
    buf[len] = '\0';
    *lenp = len;
    return buf;
}

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void print_b64 (const unsigned char *p, int len)
{
    int i;
    for (i = 0; i + 2 < len; i += 3) {
        unsigned v = p[i] << 16 | p[i+1] << 8 | p[i+2];
        printf ("%c%c%c%c", b64chars[v >> 18], b64chars[(v >> 12) & 63],
                b64chars[(v >> 6) & 63], b64chars[v & 63]);
    }
    if (len - i == 1) {
        unsigned v = p[i] << 16;
        printf ("%c%c==", b64chars[v >> 18], b64chars[(v >> 12) & 63]);
    }
    else if (len - i == 2) {
        unsigned v = p[i] << 16 | p[i+1] << 8;
        printf ("%c%c%c=", b64chars[v >> 18], b64chars[(v >> 12) & 63],
                b64chars[(v >> 6) & 63]);
    }
}

static void unwrap_one (flux_security_t *ctx, const char *j, int verify)
{
    const void *pay = NULL;
    int paylen = 0;
    const char *mech = NULL;
    int64_t userid = 0;
    int rc;

    if (verify)
        rc = flux_sign_unwrap (ctx, j, &pay, &paylen, &userid, 0);
    else
        rc = flux_sign_unwrap_anymech (ctx, j, &pay, &paylen, &mech, &userid,
                                       FLUX_SIGN_NOVERIFY);
    if (rc < 0) {
        const char *e = flux_security_last_error (ctx);
        printf ("err %s\n", e ? e : "(none)");
        return;
    }
    printf ("ok %s %lld ", mech ? mech : "-", (long long)userid);
    print_b64 (pay, paylen);
    printf ("\n");
}

static int hexval (int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int main (int argc, char *argv[])
{
    flux_security_t *ctx;
    size_t len;
    char *in;

    if (argc < 3) {
        fprintf (stderr, "usage: fsign CONFIG wrap MECH USERID | unwrap | batch\n");
        return 2;
    }
    if (!(ctx = flux_security_create (0))
        || flux_security_configure (ctx, argv[1]) < 0) {
        fprintf (stderr, "fsign: configure: %s\n",
                 ctx ? flux_security_last_error (ctx) : "create failed");
        return 2;
    }
    if (!strcmp (argv[2], "wrap") && argc == 5) {
        const char *j;
        in = read_all (stdin, &len);
        j = flux_sign_wrap_as (ctx, strtoll (argv[4], NULL, 10), in, (int)len,
                               argv[3], 0);
        if (!j) {
            fprintf (stderr, "fsign: wrap: %s\n", flux_security_last_error (ctx));
            return 1;
        }
        printf ("%s", j);
        return 0;
    }
    if (!strcmp (argv[2], "unwrap")) {
        in = read_all (stdin, &len);
        unwrap_one (ctx, in, 1);
        return 0;
    }
    if (!strcmp (argv[2], "batch")) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline (&line, &cap, stdin)) > 0) {
            char *sp = strchr (line, ' ');
            char *j;
            int i, k = 0;
            if (!sp) {
                fprintf (stderr, "fsign: bad batch line\n");
                return 2;
            }
            *sp++ = '\0';
            j = malloc (strlen (sp) / 2 + 1);
            for (i = 0; hexval (sp[i]) >= 0 && hexval (sp[i+1]) >= 0; i += 2)
                j[k++] = hexval (sp[i]) << 4 | hexval (sp[i+1]);
            j[k] = '\0';
            unwrap_one (ctx, j, !strcmp (line, "verify"));
            free (j);
        }
        return 0;
    }
    fprintf (stderr, "fsign: unknown command %s\n", argv[2]);
    return 2;
}
