#include "core/secrets.h"

#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define NONCE 12
#define TAG 16
#define MAX_SECRET 1024

int nb_secrets_load(struct nb_secrets *s, const char *dir)
{
	char path[PATH_MAX], *data = NULL;
	size_t len = 0;
	int r;

	snprintf(path, sizeof(path), "%s/secret.key", dir);
	r = nb_read_file(path, 64, &data, &len);
	if (r == 0) {
		if (len != sizeof(s->key)) {
			OPENSSL_cleanse(data, len);
			free(data);
			return -EBADMSG;
		}
		memcpy(s->key, data, sizeof(s->key));
		OPENSSL_cleanse(data, len);
		free(data);
		return 0;
	}
	if (r != -ENOENT)
		return r;
	r = nb_random_bytes(s->key, sizeof(s->key));
	if (r == 0)
		r = nb_write_file(path, s->key, sizeof(s->key), 0600);
	return r;
}

int nb_secrets_seal(const struct nb_secrets *s, const char *plaintext, char **out)
{
	size_t n = strlen(plaintext);
	unsigned char *raw;
	EVP_CIPHER_CTX *ctx;
	int len = 0, ok, r = -EIO;

	if (n > MAX_SECRET)
		return -E2BIG;
	raw = malloc(NONCE + n + TAG);
	ctx = EVP_CIPHER_CTX_new();
	if (!raw || !ctx) {
		r = -ENOMEM;
		goto out;
	}
	if (nb_random_bytes(raw, NONCE) < 0)
		goto out;
	ok = EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, s->key, raw) &&
	     EVP_EncryptUpdate(ctx, raw + NONCE, &len, (const unsigned char *)plaintext, (int)n) &&
	     EVP_EncryptFinal_ex(ctx, raw + NONCE + len, &len) &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG, raw + NONCE + n);
	if (!ok)
		goto out;
	*out = malloc(4 * ((NONCE + n + TAG + 2) / 3) + 1);
	if (!*out) {
		r = -ENOMEM;
		goto out;
	}
	EVP_EncodeBlock((unsigned char *)*out, raw, (int)(NONCE + n + TAG));
	r = 0;
out:
	if (raw)
		OPENSSL_cleanse(raw, NONCE + n + TAG);
	free(raw);
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

int nb_secrets_open(const struct nb_secrets *s, const char *sealed, char **out)
{
	size_t b64 = strlen(sealed);
	unsigned char *raw = NULL;
	char *plain = NULL;
	EVP_CIPHER_CTX *ctx = NULL;
	int n, len = 0, pad = 0, r = -EBADMSG;

	if (b64 == 0 || b64 % 4 || b64 > 4 * MAX_SECRET)
		return -EBADMSG;
	raw = malloc(b64);
	if (!raw)
		return -ENOMEM;
	n = EVP_DecodeBlock(raw, (const unsigned char *)sealed, (int)b64);
	if (sealed[b64 - 1] == '=')
		pad++;
	if (sealed[b64 - 2] == '=')
		pad++;
	n -= pad;
	if (n < NONCE + TAG)
		goto out;
	plain = malloc((size_t)(n - NONCE - TAG) + 1);
	ctx = EVP_CIPHER_CTX_new();
	if (!plain || !ctx) {
		r = -ENOMEM;
		goto out;
	}
	if (!EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, s->key, raw) ||
	    !EVP_DecryptUpdate(ctx, (unsigned char *)plain, &len, raw + NONCE, n - NONCE - TAG) ||
	    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG, raw + n - TAG) ||
	    EVP_DecryptFinal_ex(ctx, (unsigned char *)plain + len, &len) <= 0)
		goto out;
	plain[n - NONCE - TAG] = '\0';
	*out = plain;
	plain = NULL;
	r = 0;
out:
	if (plain) {
		OPENSSL_cleanse(plain, (size_t)(n - NONCE - TAG));
		free(plain);
	}
	free(raw);
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

int nb_secrets_new_key(char id[21], char secret[41])
{
	static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char rnd[56];
	int r = nb_random_bytes(rnd, sizeof(rnd));

	if (r < 0)
		return r;
	memcpy(id, "AKIA", 4);
	for (int i = 0; i < 16; i++)
		id[4 + i] = b32[rnd[i] & 31];
	id[20] = '\0';
	for (int i = 0; i < 40; i++)
		secret[i] = b64[rnd[16 + i] & 63];
	secret[40] = '\0';
	OPENSSL_cleanse(rnd, sizeof(rnd));
	return 0;
}
