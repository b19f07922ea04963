/* EC2 key pairs: making new ones and reading imported public keys, with
 * fingerprints computed exactly as EC2 shows them. Pure apart from the
 * random numbers of key generation. */
#ifndef NB_KEYPAIR_H
#define NB_KEYPAIR_H

#include <stddef.h>

enum nb_key_type { NB_KEY_RSA, NB_KEY_ED25519 };

struct nb_keypair {
	enum nb_key_type type;
	char public_openssh[1024]; /* "ssh-rsa AAAA... " / "ssh-ed25519 AAAA..." one line */
	char fingerprint[128];     /* as EC2 reports it for this key's origin */
	char *private_pem;         /* CreateKeyPair only: the key material (caller frees) */
};

/* CreateKeyPair: a new RSA 2048 or ed25519 key. RSA's fingerprint is the
 * SHA-1 of the PKCS#8 DER private key, colon-separated hex (as EC2); ed25519's
 * the base64 SHA-256 of the OpenSSH public key blob (without '='). The private
 * key is PEM: PKCS#1 "BEGIN RSA PRIVATE KEY" for RSA (format=pem), OpenSSH for
 * ed25519. */
int nb_keypair_create(enum nb_key_type type, struct nb_keypair *out);
/* ImportKeyPair: material is the OpenSSH public key line ("ssh-rsa AAAA...
 * comment"), also accepted base64-encoded once more as awscli sends
 * fileb:// contents... (the caller base64-decodes EC2's PublicKeyMaterial
 * first). RSA fingerprint: MD5 of the DER SubjectPublicKeyInfo, colon hex;
 * ed25519: base64 SHA-256 as above. -EINVAL with err for anything else. */
int nb_keypair_import(const char *material, size_t len, struct nb_keypair *out, char *err,
		      size_t errsz);
void nb_keypair_free(struct nb_keypair *kp);

#endif
