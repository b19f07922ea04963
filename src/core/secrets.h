/* Secrets at rest: access-key secrets are stored sealed with AES-256-GCM
 * under a key file only the controller reads (<state_dir>/secret.key,
 * 0600, made on first start). Never logged. */
#ifndef NB_SECRETS_H
#define NB_SECRETS_H

#include <stddef.h>

struct nb_secrets {
	unsigned char key[32];
};

/* Loads dir/secret.key, creating it when missing. */
int nb_secrets_load(struct nb_secrets *s, const char *dir);
/* Seals plaintext into base64(nonce | ciphertext | tag); caller frees *out. */
int nb_secrets_seal(const struct nb_secrets *s, const char *plaintext, char **out);
/* Opens what seal made; -EBADMSG when it was tampered with or sealed under
 * another key. Caller frees *out (and should wipe it). */
int nb_secrets_open(const struct nb_secrets *s, const char *sealed, char **out);
/* New AWS-style credentials: "AKIA" + 16 of [A-Z2-7] and a 40-character secret. */
int nb_secrets_new_key(char id[21], char secret[41]);

#endif
