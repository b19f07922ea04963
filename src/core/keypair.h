/* EC2 key pairs: making new ones and reading imported public keys, with
 * fingerprints computed exactly as EC2 shows them. Pure apart from the
 * random numbers of key generation. */
#ifndef NB_KEYPAIR_H
#define NB_KEYPAIR_H

#include <stddef.h>

enum nb_key_type { NB_KEY_RSA, NB_KEY_ED25519 };

#define NB_KEYPAIR_MAX_MATERIAL 16384 /* bytes of imported key material */

struct nb_keypair {
	enum nb_key_type type;
	/* "ssh-rsa AAAA..." / "ssh-ed25519 AAAA...": type and base64 key blob,
	 * re-encoded canonically, no comment; 4096 holds a 16384-bit RSA key. */
	char public_openssh[4096];
	char fingerprint[128]; /* as EC2 reports it for this key's origin */
	char *private_pem;     /* CreateKeyPair only: the key material (caller frees) */
};

/* CreateKeyPair: a new RSA 2048 or ed25519 key. RSA's fingerprint is the
 * SHA-1 of the PKCS#8 DER private key, colon-separated hex (as EC2); ed25519's
 * the base64 SHA-256 of the OpenSSH public key blob (without '='). The private
 * key is PEM: PKCS#1 "BEGIN RSA PRIVATE KEY" for RSA (format=pem), OpenSSH for
 * ed25519 (unencrypted, empty comment). The caller releases out->private_pem
 * with nb_keypair_free; *out is zeroed on failure. */
int nb_keypair_create(enum nb_key_type type, struct nb_keypair *out);
/* ImportKeyPair: material is the OpenSSH public key line ("ssh-rsa AAAA...
 * comment"), also accepted base64-encoded once more as awscli sends
 * fileb:// contents... (the caller base64-decodes EC2's PublicKeyMaterial
 * first). The other formats EC2 documents are read too: RFC 4716
 * ("---- BEGIN SSH2 PUBLIC KEY ----") and base64 DER SubjectPublicKeyInfo.
 * At most NB_KEYPAIR_MAX_MATERIAL bytes; RSA 1024..16384 bits or ed25519.
 * RSA fingerprint: MD5 of the DER SubjectPublicKeyInfo, colon hex;
 * ed25519: base64 SHA-256 as above. -EINVAL with a one-line reason in err
 * (may be NULL) for anything else; *out is zeroed on failure. */
int nb_keypair_import(const char *material, size_t len, struct nb_keypair *out, char *err,
                      size_t errsz);
/* Wipes and frees kp->private_pem (kp may be NULL); kp itself stays the caller's. */
void nb_keypair_free(struct nb_keypair *kp);

#endif
