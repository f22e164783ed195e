"""Tiny random-weight GGUFs of retrieval models, in the exact layouts llama.cpp loads, for tests without downloads.

    python bench/synth.py embed-cls|embed-last|rerank --out DIR [--seed N] [--tokenizer GGUF]

- ``embed-cls``: a ``bert`` embedder like bge-small (CLS pooling, non-causal), hidden 128, 2 layers, 4 heads,
  context 512, with a WordPiece vocabulary built here (~2.5k entries: lowercase English words, ``##`` pieces and
  single characters, so that English text tokenizes to words and anything ASCII to pieces, never [UNK]).
- ``embed-last``: a ``qwen3`` embedder like Qwen3-Embedding (LAST pooling, causal, q/k norms, tied embeddings),
  hidden 128, 2 layers, with SmolLM2's gpt2 BPE tokenizer copied from the test model and ``add_eos_token`` set, as
  Qwen3-Embedding appends its end-of-text token (here SmolLM2's eos); the chat template is dropped.
- ``rerank``: ``embed-cls`` plus the classification head of a bge-reranker-style cross-encoder (``cls``,
  ``cls.output``: dense, tanh, one score) and RANK pooling; llama-server builds ``[CLS] query [SEP] doc [SEP]``.

The metadata is what convert_hf_to_gguf.py writes for such models (BertModel / Qwen3Model, SpecialVocab): for a
BERT TemplateProcessing ``[CLS] $A [SEP]`` that is bos = [CLS], eos = [SEP], add_bos and add_eos true, add_sep
false, and no cls_token_id key (gguf-py has no writer for it). Matrices are F16 (the token embeddings of the 49k
BPE vocabulary random Q4_0 blocks, to keep that file near 6 MB), norms, biases, position and token-type
embeddings F32. The answers mean nothing.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import synth

KINDS = synth.RETRIEVAL_KINDS
HIDDEN, LAYERS, HEADS, BERT_FFN, BERT_CTX = 128, 2, 4, 512, 512
QWEN_KV_HEADS, QWEN_FFN, QWEN_CTX = 2, 384, 32768
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(5)

# Common English words (lowercase), whole-word entries of the WordPiece vocabulary.
WORDS = """
the of and to in is it that was for on are with as his they be at one have this from by hot word but what some we
can out other were all there when up use your how said an each she which do their time if will way about many then
them write would like so these her long make thing see him two has look more day could go come did number sound no
most people my over know water than call first who may down side been now find any new work part take get place made
live where after back little only round man year came show every good me give our under name very through just form
sentence great think say help low line differ turn cause much mean before move right boy old too same tell does set
three want air well also play small end put home read hand port large spell add even land here must big high such
follow act why ask men change went light kind off need house picture try us again animal point mother world near
build self earth father head stand own page should country found answer school grow study still learn plant cover
food sun four between state keep eye never last let thought city tree cross farm hard start might story saw far sea
draw left late run while press close night real life few north open seem together next white children begin got walk
example ease paper group always music those both mark often letter until mile river car feet care second book carry
took science eat room friend began idea fish mountain stop once base hear horse cut sure watch color face wood main
enough plain girl usual young ready above ever red list though feel talk bird soon body dog family direct pose leave
song measure door product black short numeral class wind question happen complete ship area half rock order fire
south problem piece told knew pass since top whole king space heard best hour better true during hundred five
remember step early hold west ground interest reach fast verb sing listen six table travel less morning ten simple
several vowel toward war lay against pattern slow center love person money serve appear road map rain rule govern
pull cold notice voice unit power town fine certain fly fall lead cry dark machine note wait plan figure star box noun
field rest correct able pound done beauty drive stood contain front teach week final gave green oh quick develop ocean
warm free minute strong special mind behind clear tail produce fact street inch multiply nothing course stay wheel
full force blue object decide surface deep moon island foot system busy test record boat common gold possible plane
stead dry wonder laugh thousand ago ran check game shape equate miss brought heat snow tire bring yes distant fill
east paint language among grand ball yet wave drop heart am present heavy dance engine position arm wide sail
material size vary settle speak weight general ice matter circle pair include divide syllable felt perhaps pick
sudden count square reason length represent art subject region energy hunt probable bed brother egg ride cell
believe fraction forest sit race window store summer train sleep prove lone leg exercise wall catch mount wish sky
board joy winter sat written wild instrument kept glass grass cow job edge sign visit past soft fun bright gas
weather month million bear finish happy hope flower clothe strange gone jump baby eight village meet root buy raise
solve metal whether push seven paragraph third shall held hair describe cook floor either result burn hill safe cat
century consider type law bit coast copy phrase silent tall sand soil roll temperature finger industry value fight
lie beat excite natural view sense ear else quite broke case middle kill son lake moment scale loud spring observe
child straight consonant nation dictionary milk speed method organ pay age section dress cloud surprise quiet stone
tiny climb cool design poor lot experiment bottom key iron single stick flat twenty skin smile crease hole trade
melody trip office receive row mouth exact symbol die least trouble shout except wrote seed tone join suggest clean
break lady yard rise bad blow oil blood touch grew cent mix team wire cost lost brown wear garden equal sent choose
fell fit flow fair bank collect save control decimal gentle woman captain practice separate difficult doctor please
protect noon whose locate ring character insect caught period indicate radio spoke atom human history effect
electric expect crop modern element hit student corner party supply bone rail imagine provide agree thus capital
chair danger fruit rich thick soldier process operate guess necessary sharp wing create neighbor wash bat rather
crowd corn compare poem string bell depend meat rub tube famous dollar stream fear sight thin triangle planet hurry
chief colony clock mine tie enter major fresh search send yellow gun allow print dead spot desert suit current lift
rose continue block chart hat sell success company subtract event particular deal swim term opposite wife shoe
shoulder spread arrange camp invent cotton born determine quart nine truck noise level chance gather shop stretch
throw shine property column molecule select wrong gray repeat require broad prepare salt nose plural anger claim
continent oxygen sugar death pretty skill women season solution magnet silver thank branch match suffix especially
fig afraid huge sister steel discuss forward similar guide experience score apple bought led pitch coat mass card band
rope slip win dream evening condition feed tool total basic smell valley nor double seat arrive master track parent
shore division sheet substance favor connect post spend chord fat glad original share station dad bread charge proper
bar offer segment duck instant market degree chick dear enemy reply drink occur support speech nature
range steam motion path liquid log meant quotient teeth shell neck hello mat query document passage retrieval search
embedding model vector text data file server request response token score rank answer cheap fast server network
computer phone email website online internet software hardware user account password code program function build
test result report price cost sale customer order service support product business health medical doctor patient
""".split()

# Word endings and common syllables as ``##`` continuation pieces (besides every letter and letter pair).
SUFFIXES = """
s es ed ing ly er ers est ion ions tion tions ment ments ness able ible al ial ful less ous ive ity ize ise ated ating
ation ations ism ist ists ance ence ant ent ship hood ward wards ure ture age ery ory ary
""".split()


def wordpiece_tokens() -> list[str]:
    """The vocabulary in Hugging Face's notation (``##`` marks a continuation), specials first, no duplicates."""
    letters, digits = string.ascii_lowercase, string.digits
    out: dict[str, None] = dict.fromkeys(SPECIALS)
    out |= dict.fromkeys(letters + digits + string.punctuation)
    out |= dict.fromkeys("##" + c for c in letters + digits)
    out |= dict.fromkeys(a + b for a in letters for b in letters)  # word starts
    out |= dict.fromkeys("##" + a + b for a in letters for b in letters)
    out |= dict.fromkeys("##" + s for s in SUFFIXES)
    out |= dict.fromkeys(WORDS)
    return list(out)


def phantom(token: str) -> str:
    """convert_hf_to_gguf BertModel's "phantom space" form: ``##x`` -> ``x``, a word start ``x`` -> ``▁x``."""
    if token in SPECIALS:
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def add_wordpiece_tokenizer(w) -> None:  # w: gguf.GGUFWriter
    gguf = synth._gguf()
    tokens = wordpiece_tokens()
    w.add_token_type_count(2)  # BERT's type_vocab_size; llama.cpp requires it (it only ever uses type 0)
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list([phantom(t) for t in tokens])
    w.add_token_types([gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in tokens])
    w.add_bos_token_id(CLS_ID)
    w.add_eos_token_id(SEP_ID)
    w.add_unk_token_id(UNK_ID)
    w.add_sep_token_id(SEP_ID)
    w.add_pad_token_id(PAD_ID)
    w.add_mask_token_id(MASK_ID)
    w.add_add_bos_token(True)
    w.add_add_eos_token(True)
    w.add_add_sep_token(False)
    w.add_bool("tokenizer.ggml.normalizer.lowercase", True)  # BertNormalizer(lowercase=True); no writer in gguf 0.19


class Weights:
    """Random tensors: matrices F16 with std ``synth.WEIGHT_STD``, norms 1, biases small (F32)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def matrix(self, rows: int, cols: int, dtype: type = np.float16) -> np.ndarray:  # ggml shape (cols, rows)
        return (self.rng.standard_normal((rows, cols), dtype=np.float32) * synth.WEIGHT_STD).astype(dtype)

    def bias(self, n: int) -> np.ndarray:
        return self.rng.standard_normal(n, dtype=np.float32) * (synth.WEIGHT_STD / 2)

    @staticmethod
    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    @staticmethod
    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)


def write_bert(out: Path, seed: int, rank: bool) -> None:
    """llama.cpp's LLM_ARCH_BERT (src/models/bert.cpp): separate q/k/v with biases, post-norms, GELU FFN."""
    gguf = synth._gguf()
    n_vocab, h, f, rw = len(wordpiece_tokens()), HIDDEN, BERT_FFN, Weights(np.random.default_rng(seed))
    w = gguf.GGUFWriter(out, "bert")
    w.add_name(f"synthetic tiny bert {'reranker' if rank else 'embedder'} (random weights)")
    w.add_type("model")
    w.add_block_count(LAYERS)
    w.add_context_length(BERT_CTX)
    w.add_embedding_length(h)
    w.add_feed_forward_length(f)
    w.add_head_count(HEADS)
    w.add_layer_norm_eps(1e-12)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.RANK if rank else gguf.PoolingType.CLS)
    if rank:
        w.add_classifier_output_labels(["LABEL_0"])  # num_labels 1: llama.cpp's n_cls_out
    add_wordpiece_tokenizer(w)

    w.add_tensor("token_embd.weight", rw.matrix(n_vocab, h))
    # F32 as convert_hf_to_gguf keeps them: the graph adds them to F32 activations (ggml-cpu has no f32 + f16 add)
    w.add_tensor("token_types.weight", rw.matrix(2, h, np.float32))
    w.add_tensor("position_embd.weight", rw.matrix(BERT_CTX, h, np.float32))
    w.add_tensor("token_embd_norm.weight", rw.norm(h))
    w.add_tensor("token_embd_norm.bias", rw.zeros(h))
    for i in range(LAYERS):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{name}.weight", rw.matrix(h, h))
            w.add_tensor(f"blk.{i}.{name}.bias", rw.bias(h))
        w.add_tensor(f"blk.{i}.attn_output_norm.weight", rw.norm(h))
        w.add_tensor(f"blk.{i}.attn_output_norm.bias", rw.zeros(h))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rw.matrix(f, h))
        w.add_tensor(f"blk.{i}.ffn_up.bias", rw.bias(f))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rw.matrix(h, f))
        w.add_tensor(f"blk.{i}.ffn_down.bias", rw.bias(h))
        w.add_tensor(f"blk.{i}.layer_output_norm.weight", rw.norm(h))
        w.add_tensor(f"blk.{i}.layer_output_norm.bias", rw.zeros(h))
    if rank:  # RobertaClassificationHead: dense (cls), tanh, out_proj (cls.output) -> one score
        w.add_tensor("cls.weight", rw.matrix(h, h))
        w.add_tensor("cls.bias", rw.bias(h))
        w.add_tensor("cls.output.weight", rw.matrix(1, h))
        w.add_tensor("cls.output.bias", rw.bias(1))
    synth.write_out(w)


def embed_last_tokenizer(tokenizer: Path) -> list[tuple[str, object, object, object]]:
    """SmolLM2's tokenizer.* keys without the chat template, with ``add_eos_token`` true."""
    gguf = synth._gguf()
    drop = ("tokenizer.chat_template", "tokenizer.ggml.add_eos_token")
    fields = [f for f in synth.tokenizer_fields(tokenizer) if not f[0].startswith(drop)]
    fields.append(("tokenizer.ggml.add_eos_token", True, gguf.GGUFValueType.BOOL, None))
    return fields


def write_qwen3(out: Path, seed: int, tokenizer: Path) -> None:
    """llama.cpp's LLM_ARCH_QWEN3 (src/models/qwen3.cpp): RMS norms, q/k norms, SwiGLU, output tied to token_embd."""
    gguf = synth._gguf()
    fields = embed_last_tokenizer(tokenizer)
    n_vocab = len(next(v for k, v, _, _ in fields if k == "tokenizer.ggml.tokens"))  # type: ignore[arg-type]
    h, f, head_dim = HIDDEN, QWEN_FFN, HIDDEN // HEADS
    kv = QWEN_KV_HEADS * head_dim
    rng = np.random.default_rng(seed)
    rw = Weights(rng)
    w = gguf.GGUFWriter(out, "qwen3")
    w.add_name("synthetic tiny qwen3 embedder (random weights)")
    w.add_type("model")
    w.add_block_count(LAYERS)
    w.add_context_length(QWEN_CTX)
    w.add_embedding_length(h)
    w.add_feed_forward_length(f)
    w.add_head_count(HEADS)
    w.add_head_count_kv(QWEN_KV_HEADS)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_pooling_type(gguf.PoolingType.LAST)
    for key, value, vtype, sub in fields:
        w.add_key_value(key, value, vtype, sub)

    blocks = synth.Blocks("Q4_0", rng)
    w.add_tensor("token_embd.weight", blocks.raw(n_vocab * h).reshape(n_vocab, -1), raw_dtype=blocks.qtype)
    for i in range(LAYERS):
        w.add_tensor(f"blk.{i}.attn_norm.weight", rw.norm(h))
        w.add_tensor(f"blk.{i}.attn_q.weight", rw.matrix(h, h))
        w.add_tensor(f"blk.{i}.attn_k.weight", rw.matrix(kv, h))
        w.add_tensor(f"blk.{i}.attn_v.weight", rw.matrix(kv, h))
        w.add_tensor(f"blk.{i}.attn_q_norm.weight", rw.norm(head_dim))
        w.add_tensor(f"blk.{i}.attn_k_norm.weight", rw.norm(head_dim))
        w.add_tensor(f"blk.{i}.attn_output.weight", rw.matrix(h, h))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", rw.norm(h))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rw.matrix(f, h))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rw.matrix(f, h))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rw.matrix(h, f))
    w.add_tensor("output_norm.weight", rw.norm(h))
    synth.write_out(w)


def write_retrieval(kind: str, out_dir: Path, seed: int = 0, tokenizer: Path = synth.DEFAULT_TOKENIZER) -> Path:
    """Write ``out_dir/synth-{kind}.gguf`` (``tokenizer``: the GGUF whose BPE tokenizer ``embed-last`` copies)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"synth-{kind}.gguf"
    if kind == "embed-last":
        write_qwen3(out, seed, tokenizer)
    else:
        write_bert(out, seed, rank=kind == "rerank")
    return out
