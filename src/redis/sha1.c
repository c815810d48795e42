/* SHA-1, only to name Lua scripts for EVALSHA: the server keys its script
 * cache by the SHA-1 of the text, so the client can send EVALSHA without
 * asking for the digest first. The digest is OpenSSL's (libcrypto). */
#include <openssl/evp.h>
#include <stdio.h>

#include "redis/redis.h"

int tw__sha1_hex(const char *text, size_t len, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    /* EVP_Digest fails only when libcrypto cannot allocate. */
    if (!EVP_Digest(text, len, md, &n, EVP_sha1(), NULL) || n != 20)
        return TW_ENOMEM;
    for (unsigned i = 0; i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}
