/*
 * ss_tokenizer.h - byte-level BPE tokenizer loaded from a HF tokenizer.json (GPT-NeoX kind).
 *
 * Encoding follows HF `tokenizers` exactly for this kind of file: added tokens are split out
 * first, the rest is NFC-normalised, pre-split with the GPT-2 regex, mapped byte -> unicode
 * (ByteLevel) and merged by rank. Decoding maps ids back to bytes. A streaming decoder never
 * emits half a UTF-8 character.
 *
 * Threading: an ss_tokenizer is immutable after loading and may be shared by threads;
 * ss_detok (streaming decoder) belongs to one thread at a time.
 */
#ifndef SS_TOKENIZER_H
#define SS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "ss_err.h"

typedef struct ss_tokenizer ss_tokenizer;

/* Load tokenizer.json from a file. SS_ERR_UNSUPPORTED for a kind we do not implement (not BPE,
 * not ByteLevel), SS_ERR_FORMAT for malformed files; ss_errmsg() says what. */
ss_err ss_tokenizer_open(ss_tokenizer **out, const char *path);
/* The same from a JSON text in memory (len bytes). */
ss_err ss_tokenizer_open_mem(ss_tokenizer **out, const char *json, size_t len);
void ss_tokenizer_close(ss_tokenizer *t);

/* Number of ids (model vocab + added tokens): every id < this decodes to something. */
int ss_tokenizer_vocab_size(const ss_tokenizer *t);
/* Id of a token string (exact vocab or added-token content), or -1. */
int32_t ss_tokenizer_token_id(const ss_tokenizer *t, const char *token);

/*
 * Encode UTF-8 text (len bytes; need not be NUL-terminated), as HF's
 * encode(text, add_special_tokens=False). Special/added tokens in the text are recognised.
 * *ids is malloc'd (free() it), *n_ids its length. SS_ERR_INVALID for invalid UTF-8.
 */
ss_err ss_tokenizer_encode(const ss_tokenizer *t, const char *text, size_t len, int32_t **ids,
                           size_t *n_ids);

/*
 * Decode ids to UTF-8 text (NUL-terminated, malloc'd, free() it; *len without the NUL, may be NULL).
 * Invalid UTF-8 byte sequences produced by the ids are replaced with U+FFFD, as HF does.
 * SS_ERR_INVALID for an id out of range. skip_special drops special tokens.
 */
ss_err ss_tokenizer_decode(const ss_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                           char **text, size_t *len);

/* The raw bytes of one token (after byte-level decoding); NULL for an invalid id.
 * *len receives the byte count. Points into the tokenizer. */
const char *ss_tokenizer_token_bytes(const ss_tokenizer *t, int32_t id, size_t *len);

/* ---- streaming decode --------------------------------------------------------------------- */

typedef struct ss_detok ss_detok;
ss_err ss_detok_new(const ss_tokenizer *t, ss_detok **out);
void ss_detok_free(ss_detok *d);
/*
 * Feed one id and get the text that is now complete: every whole UTF-8 character, holding back an
 * incomplete tail until later ids complete it (or it can no longer become valid: then U+FFFD).
 * Returns a NUL-terminated string owned by d, valid until the next call on d; *len (may be NULL)
 * its length. Returns NULL with SS_ERR_INVALID set for an id out of range.
 */
const char *ss_detok_push(ss_detok *d, int32_t id, size_t *len);
/* Flush what is held back (an incomplete tail becomes U+FFFD). Same ownership as push. */
const char *ss_detok_flush(ss_detok *d, size_t *len);

#endif
