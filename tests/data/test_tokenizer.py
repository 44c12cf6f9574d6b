"""The shipped tiny tokenizer: LLaMA's special ids, sensible pieces, small."""

from __future__ import annotations

from xraygpt.models.llm import TINY_TOKENIZER_DIR, load_tokenizer


def test_llama_compatible_special_tokens():
    tok = load_tokenizer(TINY_TOKENIZER_DIR)
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.pad_token_id == tok.eos_token_id
    assert tok.convert_ids_to_tokens([3, 13, 258]) == ["<0x00>", "<0x0A>", "<0xFF>"]
    assert tok("heart").input_ids[0] == 1  # bos with special tokens, as LLaMA
    assert tok("heart", add_special_tokens=False).input_ids[0] != 1


def test_end_symbols_and_report_text_tokenize_sensibly():
    tok = load_tokenizer(TINY_TOKENIZER_DIR)
    assert tok.convert_ids_to_tokens(tok("###", add_special_tokens=False).input_ids) == ["▁###"]
    assert tok("clear\n", add_special_tokens=False).input_ids[-1] == 13  # the newline byte
    text = "The heart size is normal. No pleural effusion or pneumothorax.###"
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) <= 12  # real words are whole pieces, not characters
    assert tok.decode(ids) == text
    odd = "naïve 😀 x\ty"
    assert tok.decode(tok(odd, add_special_tokens=False).input_ids) == odd  # byte fallback


def test_tokenizer_files_are_small():
    size = sum(p.stat().st_size for p in TINY_TOKENIZER_DIR.iterdir())
    assert size < 1_000_000
