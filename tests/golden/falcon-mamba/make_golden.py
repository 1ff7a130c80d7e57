"""Make the falcon-mamba-tiny golden: a tiny random FalconMambaForCausalLM (HF transformers),
saved as a HF checkpoint, with logits at every position, the cache state after each sequence,
the final-norm output and a greedy continuation, computed in float64 by transformers itself.

Run: python3 make_golden.py OUTDIR   (needs torch, transformers, safetensors)
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import FalconMambaConfig, FalconMambaForCausalLM

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(1234)
cfg = FalconMambaConfig(vocab_size=320, hidden_size=48, state_size=16, num_hidden_layers=3,
                        expand=2, conv_kernel=4, time_step_rank=6, use_bias=False,
                        use_conv_bias=True, layer_norm_epsilon=1e-5, mixer_rms_eps=1e-6,
                        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
                        pad_token_id=0)
model = FalconMambaForCausalLM(cfg)
with torch.no_grad():  # move every weight off its textbook init value
    for name, p in model.named_parameters():
        p.add_(torch.randn_like(p) * 0.05)
model.eval()
model.save_pretrained(out, safe_serialization=True)
model = model.double()

g = torch.Generator().manual_seed(99)
seqs = {"a": torch.randint(1, 320, (29,), generator=g), "b": torch.randint(1, 320, (7,), generator=g)}
gold = {}
with torch.no_grad():
    for k, ids in seqs.items():
        o = model(ids[None], use_cache=True, output_hidden_states=True)
        gold[f"seq_{k}.ids"] = ids.to(torch.int32)
        gold[f"seq_{k}.logits"] = o.logits[0].float()
        cp = o.cache_params if getattr(o, "cache_params", None) is not None else o.past_key_values
        # transformers 5: DynamicCache of LinearAttentionLayer (conv_states, recurrent_states)
        def tensor_of(x):
            if isinstance(x, dict):  # keyed by state index in some versions
                vals = [v for v in x.values() if isinstance(v, torch.Tensor)]
                assert len(vals) == 1, {k: type(v) for k, v in x.items()}
                return vals[0]
            return x
        conv = torch.stack([tensor_of(l.conv_states) for l in cp.layers])
        ssm = torch.stack([tensor_of(l.recurrent_states) for l in cp.layers])
        gold[f"seq_{k}.state.conv"] = conv[:, 0].float().contiguous()
        gold[f"seq_{k}.state.ssm"] = ssm[:, 0].float().contiguous()
        gold[f"seq_{k}.final_hidden"] = o.hidden_states[-1][0, -1].float()
    ids = seqs["a"][None]
    gen = model.generate(ids, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    gold["seq_a.greedy12"] = gen[0, ids.shape[1]:].to(torch.int32)
save_file({k: v.contiguous() for k, v in gold.items()}, os.path.join(out, "golden.safetensors"))
with open(os.path.join(out, "cases.json"), "w") as f:
    json.dump({"model": "falcon-mamba-tiny", "transformers": transformers.__version__,
               "torch": torch.__version__, "merges": [],
               "tolerance": {"logits_abs": 0.002, "logits_rel": 0.001, "state_abs": 0.001},
               "notes": ["HF FalconMambaForCausalLM in float64; state from cache_params after "
                         "each sequence; final_hidden = last hidden state (after norm_f)"]},
              f, indent=2)
print("transformers", transformers.__version__, "torch", torch.__version__)
print(sorted(gold))
