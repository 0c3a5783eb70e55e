/* TLS sessions for the page-server wire, on GnuTLS (tls.h). */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tls.h"

struct tls_creds {
	gnutls_certificate_credentials_t x509;
};

struct tls_sess {
	gnutls_session_t g;
	int fd;
	bool server;
	bool done;		/* handshake over and peer checked */
	char host[256];		/* the name the peer must carry; "" for none */
	size_t unsent;		/* a send said EAGAIN: the bytes it must be given again */
	int last;		/* the last GnuTLS error */
};

int tls_opt(struct tls_opts *o, const char *name, const char *arg)
{
	if (!strcmp(name, "tls"))
		o->on = true;
	else if (!strcmp(name, "tls-cacert"))
		o->cacert = arg;
	else if (!strcmp(name, "tls-cacrl"))
		o->cacrl = arg;
	else if (!strcmp(name, "tls-cert"))
		o->cert = arg;
	else if (!strcmp(name, "tls-key"))
		o->key = arg;
	else if (!strcmp(name, "tls-no-cn-verify"))
		o->no_cn_verify = true;
	else
		return 0;
	return 1;
}

struct tls_creds *tls_creds_load(const struct tls_opts *o, char *why, size_t len)
{
	const char *cacert = o->cacert ? o->cacert : TLS_DEF_CACERT;
	const char *cacrl = o->cacrl ? o->cacrl : TLS_DEF_CACRL;
	const char *cert = o->cert ? o->cert : TLS_DEF_CERT;
	const char *key = o->key ? o->key : TLS_DEF_KEY;
	struct tls_creds *c = calloc(1, sizeof(*c));
	int ret;

	if (!c || gnutls_certificate_allocate_credentials(&c->x509) < 0) {
		free(c);
		snprintf(why, len, "TLS: out of memory");
		return NULL;
	}
	/* As CRIU: the system's CAs only when no CA is named. */
	if (!o->cacert && gnutls_certificate_set_x509_system_trust(c->x509) < 0) {
		snprintf(why, len, "TLS: cannot load the system's trusted CAs");
		goto fail;
	}
	ret = gnutls_certificate_set_x509_trust_file(c->x509, cacert, GNUTLS_X509_FMT_PEM);
	if (ret < 0 || (ret == 0 && o->cacert)) {
		snprintf(why, len, "TLS: CA certificate %s: %s", cacert,
			 ret < 0 ? gnutls_strerror(ret) : "no certificate in it");
		goto fail;
	}
	if (access(cacrl, R_OK) == 0) {
		ret = gnutls_certificate_set_x509_crl_file(c->x509, cacrl, GNUTLS_X509_FMT_PEM);
		if (ret < 0) {
			snprintf(why, len, "TLS: revocation list %s: %s", cacrl, gnutls_strerror(ret));
			goto fail;
		}
	} else if (o->cacrl) {
		snprintf(why, len, "TLS: revocation list %s: %s", cacrl, strerror(errno));
		goto fail;
	}
	ret = gnutls_certificate_set_x509_key_file(c->x509, cert, key, GNUTLS_X509_FMT_PEM);
	if (ret < 0) {
		snprintf(why, len, "TLS: certificate %s with key %s: %s", cert, key,
			 gnutls_strerror(ret));
		goto fail;
	}
	return c;
fail:
	gnutls_certificate_free_credentials(c->x509);
	free(c);
	return NULL;
}

void tls_creds_free(struct tls_creds *c)
{
	if (!c)
		return;
	gnutls_certificate_free_credentials(c->x509);
	free(c);
}

/* GnuTLS's transport: plain send and recv, never SIGPIPE. */
static ssize_t push(gnutls_transport_ptr_t p, const void *buf, size_t len)
{
	struct tls_sess *s = p;
	ssize_t n = send(s->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);

	if (n < 0)
		gnutls_transport_set_errno(s->g, errno);
	return n;
}

static ssize_t pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
	struct tls_sess *s = p;
	ssize_t n = recv(s->fd, buf, len, MSG_DONTWAIT);

	if (n < 0)
		gnutls_transport_set_errno(s->g, errno);
	return n;
}

struct tls_sess *tls_sess_new(struct tls_creds *c, int fd, bool server, const char *host,
			      char *why, size_t len)
{
	struct tls_sess *s = calloc(1, sizeof(*s));
	int ret;

	if (!s) {
		snprintf(why, len, "TLS: out of memory");
		return NULL;
	}
	s->fd = fd;
	s->server = server;
	if (host)
		snprintf(s->host, sizeof(s->host), "%s", host);
	ret = gnutls_init(&s->g, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK);
	if (ret < 0) {
		free(s);
		snprintf(why, len, "TLS: %s", gnutls_strerror(ret));
		return NULL;
	}
	ret = gnutls_credentials_set(s->g, GNUTLS_CRD_CERTIFICATE, c->x509);
	/*
	 * GnuTLS's secure set, sorted for speed (AES-128-GCM first): pages are
	 * bulk data, and criu's default set (NORMAL) shares these ciphers.
	 */
	if (ret == 0 && gnutls_priority_set_direct(s->g, "PERFORMANCE", NULL) < 0)
		ret = gnutls_set_default_priority(s->g);
	if (ret < 0) {
		snprintf(why, len, "TLS: %s", gnutls_strerror(ret));
		tls_sess_free(s);
		return NULL;
	}
	if (server) {
		gnutls_certificate_server_set_request(s->g, GNUTLS_CERT_REQUIRE);
		gnutls_certificate_send_x509_rdn_sequence(s->g, 1);
	} else if (host) {
		gnutls_server_name_set(s->g, GNUTLS_NAME_DNS, host, strlen(host));
	}
	/* Check the peer within the handshake, so that a refused peer is told (an alert). */
	gnutls_session_set_verify_cert(s->g, host, 0);
	gnutls_transport_set_ptr(s->g, s);
	gnutls_transport_set_push_function(s->g, push);
	gnutls_transport_set_pull_function(s->g, pull);
	return s;
}

/* Check the peer's certificate: signed by our CA, not revoked, in date, naming the host. */
static int verify_peer(struct tls_sess *s, char *why, size_t len)
{
	unsigned status = 0;
	gnutls_datum_t txt;
	int ret = gnutls_certificate_verify_peers3(s->g, s->host[0] ? s->host : NULL, &status);

	if (ret == GNUTLS_E_NO_CERTIFICATE_FOUND || (ret == 0 && s->last == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR && !status))
		status = gnutls_session_get_verify_cert_status(s->g);
	if (ret == GNUTLS_E_NO_CERTIFICATE_FOUND && !status) {
		snprintf(why, len, "TLS: the peer showed no certificate");
		return -EPROTO;
	}
	if (ret < 0 && !status) {
		s->last = ret;
		snprintf(why, len, "TLS: the peer's certificate cannot be checked: %s",
			 gnutls_strerror(ret));
		return -EPROTO;
	}
	if (status == 0)
		return 0;
	if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &txt, 0) == 0) {
		snprintf(why, len, "TLS: the peer's certificate is refused: %s%s%s", txt.data,
			 s->host[0] ? " (the name it must carry: " : "", s->host[0] ? s->host : "");
		if (s->host[0])
			strncat(why, ")", len - strlen(why) - 1);
		gnutls_free(txt.data);
	} else {
		snprintf(why, len, "TLS: the peer's certificate is refused (status 0x%x)", status);
	}
	return -EPROTO;
}

int tls_handshake(struct tls_sess *s, char *why, size_t len)
{
	int ret;

	if (s->done)
		return 0;
	do
		ret = gnutls_handshake(s->g);
	while (ret == GNUTLS_E_INTERRUPTED);
	if (ret == GNUTLS_E_AGAIN)
		return -EAGAIN;
	if (ret == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
		s->last = ret;
		/* Say why to the peer, so that it does not take this for a cut and try again. */
		gnutls_alert_send(s->g, GNUTLS_AL_FATAL, GNUTLS_A_BAD_CERTIFICATE);
		return verify_peer(s, why, len);
	}
	if (ret < 0) {
		s->last = ret;
		if (ret == GNUTLS_E_FATAL_ALERT_RECEIVED || ret == GNUTLS_E_WARNING_ALERT_RECEIVED)
			snprintf(why, len, "TLS handshake failed: the peer refused us: %s",
				 gnutls_alert_get_name(gnutls_alert_get(s->g)));
		else
			snprintf(why, len, "TLS handshake failed: %s", gnutls_strerror(ret));
		if (ret != GNUTLS_E_FATAL_ALERT_RECEIVED)
			gnutls_alert_send_appropriate(s->g, ret);
		return -EPROTO;
	}
	ret = verify_peer(s, why, len);
	if (ret < 0)
		return ret;
	s->done = true;
	return 0;
}

bool tls_want_write(const struct tls_sess *s)
{
	return gnutls_record_get_direction(s->g) == 1;
}

/* A GnuTLS error as -errno, keeping it for tls_strerror. */
static ssize_t gerr(struct tls_sess *s, ssize_t ret)
{
	s->last = (int)ret;
	switch (ret) {
	case GNUTLS_E_AGAIN:
	case GNUTLS_E_INTERRUPTED:
		return -EAGAIN;
	case GNUTLS_E_PUSH_ERROR:
		return -EPIPE;
	case GNUTLS_E_PULL_ERROR:
	case GNUTLS_E_PREMATURE_TERMINATION:
		return -ECONNRESET;
	case GNUTLS_E_FATAL_ALERT_RECEIVED:
		return -EACCES;
	default:
		return -EPROTO;
	}
}

ssize_t tls_send(struct tls_sess *s, const void *buf, size_t len)
{
	ssize_t n;

	/* GnuTLS has encrypted and kept those bytes: give it exactly them again. */
	if (s->unsent && len > s->unsent)
		len = s->unsent;
	n = gnutls_record_send(s->g, buf, len);
	if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
		s->unsent = len;
		return -EAGAIN;
	}
	s->unsent = 0;
	return n < 0 ? gerr(s, n) : n;
}

ssize_t tls_recv(struct tls_sess *s, void *buf, size_t len)
{
	ssize_t n = gnutls_record_recv(s->g, buf, len);

	if (n == GNUTLS_E_REHANDSHAKE) {
		/* Not something a page-server peer asks: refuse it. */
		s->last = (int)n;
		return -EPROTO;
	}
	return n < 0 ? gerr(s, n) : n;
}

size_t tls_pending(const struct tls_sess *s)
{
	return gnutls_record_check_pending(s->g);
}

void tls_bye(struct tls_sess *s)
{
	if (s && s->done)
		gnutls_bye(s->g, GNUTLS_SHUT_WR);
}

void tls_sess_free(struct tls_sess *s)
{
	if (!s)
		return;
	gnutls_deinit(s->g);
	free(s);
}

const char *tls_desc(const struct tls_sess *s)
{
	static __thread char buf[128];
	char *d = gnutls_session_get_desc(s->g);

	snprintf(buf, sizeof(buf), "%s", d ? d : "?");
	gnutls_free(d);
	return buf;
}

const char *tls_strerror(const struct tls_sess *s)
{
	static __thread char buf[160];

	if (s->last == GNUTLS_E_FATAL_ALERT_RECEIVED) {
		snprintf(buf, sizeof(buf), "the peer refused us (TLS alert: %s)",
			 gnutls_alert_get_name(gnutls_alert_get(s->g)));
		return buf;
	}
	return gnutls_strerror(s->last);
}
