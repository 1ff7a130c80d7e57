/*
 * ss_tokenizer.h - byte-level BPE tokenizer loaded from a HF tokenizer.json (GPT-NeoX kind).
 *
 * Encoding follows HF `tokenizers` exactly for this kind of file: added tokens are split out
 * first, the rest is NFC-normalised, pre-split with the GPT-2 regex, mapped byte -> unicode
 * (ByteLevel) and merged by rank. Decoding maps ids back to bytes. A streaming decoder never
 * emits half a UTF-8 character.
 *
 * Supported tokenizer.json: model BPE (merges as "a b" or ["a", "b"], optional unk_token and
 * fuse_unk); normalizer NFC, a Sequence of NFC, or none; pre_tokenizer ByteLevel (add_prefix_space,
 * use_regex), alone or as the only member of a Sequence; decoder ByteLevel; added_tokens with
 * special / normalized / lstrip / rstrip / single_word. Anything else is SS_ERR_UNSUPPORTED with a
 * message naming it. post_processor, truncation and padding are ignored: encode is HF's
 * encode(text, add_special_tokens=False) without truncation or padding.
 * Ids are assigned as HF assigns them when it loads the file: an added token whose content is in
 * the vocab takes that id, the others follow the vocab in file order (the file's "id" fields are
 * not used, as in HF; for files HF wrote they agree).
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

/*
 * Load tokenizer.json from a file. On success *out is a new tokenizer (ss_tokenizer_close() it);
 * on failure *out is untouched. SS_ERR_NOT_FOUND / SS_ERR_IO when the file cannot be read,
 * SS_ERR_UNSUPPORTED for a kind we do not implement (not BPE, not ByteLevel, byte_fallback, ...),
 * SS_ERR_FORMAT for malformed files (bad JSON, wrong types, merges naming unknown tokens, duplicate
 * ids); ss_errmsg() names the file and what is wrong.
 */
ss_err ss_tokenizer_open(ss_tokenizer **out, const char *path);
/* The same from a JSON text in memory (len bytes, need not be NUL-terminated; not kept):
 * SS_ERR_FORMAT, SS_ERR_UNSUPPORTED or SS_ERR_NOMEM. */
ss_err ss_tokenizer_open_mem(ss_tokenizer **out, const char *json, size_t len);
/* Free a tokenizer. NULL is a no-op. No other thread may still be using it. */
void ss_tokenizer_close(ss_tokenizer *t);

/* Number of ids (model vocab + added tokens), i.e. the largest id + 1. Every id below decodes to
 * something unless the file leaves holes in its ids (HF-written files do not). */
int ss_tokenizer_vocab_size(const ss_tokenizer *t);
/* Id of a token string (exact added-token content first, then the model vocab, as HF's
 * token_to_id; vocab strings are in the byte-level alphabet, e.g. "Ġworld"), or -1. */
int32_t ss_tokenizer_token_id(const ss_tokenizer *t, const char *token);

/*
 * Encode UTF-8 text (len bytes; need not be NUL-terminated; may contain NUL), as HF's
 * encode(text, add_special_tokens=False). Special/added tokens in the text are recognised.
 * *ids is malloc'd (free() it; non-NULL even when *n_ids is 0), *n_ids its length; both are set
 * only on success. SS_ERR_INVALID for invalid UTF-8 (the message gives the byte offset),
 * SS_ERR_NOMEM. Thread-safe: any number of threads may encode with one tokenizer at once.
 * Cost: linear in len (about 30 ms per MB of English on one core).
 */
ss_err ss_tokenizer_encode(const ss_tokenizer *t, const char *text, size_t len, int32_t **ids,
                           size_t *n_ids);

/*
 * Decode ids to UTF-8 text (NUL-terminated, malloc'd, free() it; *len without the NUL, may be
 * NULL). Invalid UTF-8 byte sequences produced by the ids are replaced with U+FFFD, as HF does (one
 * per maximal invalid subpart, String::from_utf8_lossy). Added tokens decode to their content
 * (through the ByteLevel decoder, as in HF). SS_ERR_INVALID for an id out of range (HF would skip
 * it); nothing is allocated then. skip_special drops special tokens. Thread-safe.
 */
ss_err ss_tokenizer_decode(const ss_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                           char **text, size_t *len);

/* The raw bytes of one token (after byte-level decoding; not NUL-terminated, may be part of a
 * UTF-8 character); NULL for an invalid id. *len (may be NULL) receives the byte count. Points
 * into the tokenizer: valid until ss_tokenizer_close(). */
const char *ss_tokenizer_token_bytes(const ss_tokenizer *t, int32_t id, size_t *len);

/* ---- streaming decode --------------------------------------------------------------------- */

typedef struct ss_detok ss_detok;
/* A streaming decoder over t (which must outlive it). *out set on success; SS_ERR_NOMEM. */
ss_err ss_detok_new(const ss_tokenizer *t, ss_detok **out);
/* Free a streaming decoder. NULL is a no-op. */
void ss_detok_free(ss_detok *d);
/*
 * Feed one id and get the text that is now complete: every whole UTF-8 character, holding back an
 * incomplete tail until later ids complete it (or it can no longer become valid: then U+FFFD).
 * The concatenation of all pushes and the final flush equals ss_tokenizer_decode(skip_special=0)
 * of the same ids, byte for byte. Returns a NUL-terminated string owned by d, valid until the
 * next call on d; *len (may be NULL) its length (0 while a character is held back). Returns NULL
 * with SS_ERR_INVALID set (ss_errmsg()) for an id out of range, leaving d as it was; NULL also on
 * allocation failure.
 */
const char *ss_detok_push(ss_detok *d, int32_t id, size_t *len);
/* Flush what is held back (an incomplete tail becomes U+FFFD) and start afresh. Same ownership
 * as push. */
const char *ss_detok_flush(ss_detok *d, size_t *len);

#endif
