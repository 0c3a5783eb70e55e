/*
 * TLS for the page-server wire, on GnuTLS (the library CRIU uses), with
 * CRIU's options and their meaning (criu(8) --tls*):
 *
 *   --tls-cacert  the CA that must have signed the peer's certificate
 *                 (default /etc/pki/CA/cacert.pem; the system's trusted CAs
 *                 are added only when it is not given)
 *   --tls-cacrl   a revocation list; the default /etc/pki/CA/cacrl.pem is
 *                 used when readable, a given one must be
 *   --tls-cert    our certificate (default /etc/pki/criu/cert.pem)
 *   --tls-key     its key (default /etc/pki/criu/private/key.pem)
 *   --tls-no-cn-verify  do not check that the peer's certificate names the
 *                 host: otherwise both sides check it against --address
 *                 (the client: the server it connects to; the server: its
 *                 listen address, when one is given), as CRIU does
 *
 * Ciphers: GnuTLS's "PERFORMANCE" set (the secure ones, fastest first:
 * AES-128-GCM), which criu's default set shares.
 *
 * Both sides present a certificate and check the other's: the server
 * requires a client certificate (a client whose certificate the CA did not
 * sign is refused), the client checks the server's.
 *
 * Sessions are non-blocking: the handshake is stepped from the event loop,
 * and tls_send keeps GnuTLS's rule that a send that said -EAGAIN is
 * repeated with the same bytes. Nothing here knows the page-server wire.
 */
#ifndef UFFD_TLS_H
#define UFFD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define TLS_DEF_CACERT	"/etc/pki/CA/cacert.pem"
#define TLS_DEF_CACRL	"/etc/pki/CA/cacrl.pem"
#define TLS_DEF_CERT	"/etc/pki/criu/cert.pem"
#define TLS_DEF_KEY	"/etc/pki/criu/private/key.pem"

/* The options as given; NULL paths take the defaults above. */
struct tls_opts {
	bool on;		/* --tls */
	const char *cacert, *cacrl, *cert, *key;
	bool no_cn_verify;
};

struct tls_creds;
struct tls_sess;

/*
 * Parse one of the TLS options (NAME without the dashes, ARG its argument
 * or NULL) into O. 1 if NAME is one, 0 if not.
 */
int tls_opt(struct tls_opts *o, const char *name, const char *arg);

/* Load the CA, CRL, certificate and key O names. NULL with WHY filled (naming the file). */
struct tls_creds *tls_creds_load(const struct tls_opts *o, char *why, size_t len);
void tls_creds_free(struct tls_creds *c);

/*
 * A session on the connected non-blocking socket FD (not owned: the caller
 * closes it). SERVER: requires a client certificate. HOST: the name the
 * peer's certificate must carry, or NULL for none (--tls-no-cn-verify, or a
 * server listening on every address). NULL with WHY filled.
 */
struct tls_sess *tls_sess_new(struct tls_creds *c, int fd, bool server, const char *host,
			      char *why, size_t len);

/*
 * Go on with the handshake, then check the peer's certificate. 0 when done
 * and the peer is trusted; -EAGAIN to be called again when FD is ready
 * (tls_want_write says for what); -EPROTO (or another -errno) with WHY
 * filled when it failed or the peer is refused.
 */
int tls_handshake(struct tls_sess *s, char *why, size_t len);

/* After -EAGAIN: does the session wait to write (else to read)? */
bool tls_want_write(const struct tls_sess *s);

/*
 * Send up to LEN bytes of BUF as records. Bytes sent (maybe fewer), or
 * -EAGAIN (call again later with the same BUF: at least the bytes it was
 * given then), or another -errno (-EPIPE, -ECONNRESET, -EPROTO...).
 */
ssize_t tls_send(struct tls_sess *s, const void *buf, size_t len);

/*
 * Receive up to LEN bytes. Bytes, 0 at the peer's end (close_notify or
 * EOF), or -errno (-EAGAIN; -EACCES: the peer sent a fatal alert, such as a
 * refused certificate: trying again will not help).
 */
ssize_t tls_recv(struct tls_sess *s, void *buf, size_t len);

/* Bytes already decrypted and waiting (read them before polling the fd again). */
size_t tls_pending(const struct tls_sess *s);

/* Say close_notify, without waiting for anything. */
void tls_bye(struct tls_sess *s);

void tls_sess_free(struct tls_sess *s);

/* The protocol and cipher of S once its handshake is done, e.g. "(TLS1.3)-(ECDHE-SECP256R1)-..." (valid until the next call). */
const char *tls_desc(const struct tls_sess *s);

/* The last error of S as text (for log lines after a -EPROTO). */
const char *tls_strerror(const struct tls_sess *s);

#endif
