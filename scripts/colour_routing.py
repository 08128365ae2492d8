"""Does the instruction's colour word reach the action position? Attention on it, and the hidden state's change.

    MUJOCO_GL=egl PYOPENGL_PLATFORM=egl .venv/bin/python scripts/colour_routing.py

On 10 lift/base validation scenes (seeds 3,000,000 +) of the two-view candidate v3b: for every LLM head, the
attention from the action position onto the colour token (``robosteer.explain``'s ``attention.text``), and the
change of the final hidden state at the action position when the instruction names the other cube
(``counterfactual_scene``: identical images). Prints the mean over scenes of the largest per-head attention
on the colour token, the mean total attention on the prompt, and |x_a - x_b| against |x|.
"""
import numpy as np, torch, robosteer
from robosteer.sim.env import make_env, SimConfig
from robosteer.sim.scene import sample_scene, counterfactual_scene
vla = robosteer.load_vla("candidates/openvla-tiny-franka-v3b").eval()
env = make_env(SimConfig(cameras=("agentview", "wrist")))
colour_att, other_att, hid_diff, hid_norm = [], [], [], []
cap = {}
h = vla.language_model.model.norm.register_forward_hook(lambda m, a, o: cap.__setitem__("x", o.detach()))
for seed in range(3_000_000, 3_000_010):
    scene = sample_scene("lift/base", seed); obs = env.reset_scene(scene)
    ex = robosteer.explain(vla, list(obs.images), scene.instruction, proprio=obs.proprio)
    col = scene.object("target").color
    per_head = []
    for head in [f"llm.L{l}H{k}" for l in range(vla.head_layout.shape("llm")[0]) for k in range(vla.head_layout.shape("llm")[1])]:
        t = ex.attention.text(head)
        tok = t[t.iloc[:, 0].astype(str).str.contains(col)]
        per_head.append((head, float(tok.iloc[:, -1].sum()), float(t.iloc[:, -1].sum())))
    colour_att.append(max(p[1] for p in per_head)); other_att.append(np.mean([p[2] for p in per_head]))
    xs = []
    for s in (scene, counterfactual_scene(scene)):
        o = env.reset_scene(s)
        with torch.no_grad(): vla.predict_action(list(o.images), s.instruction, proprio=o.proprio)
        xs.append(cap["x"][0, -1].float())
    hid_diff.append(float((xs[0] - xs[1]).norm())); hid_norm.append(float(xs[0].norm()))
    if seed == 3_000_000:
        print(t.head(20).to_string()); print(sorted(per_head, key=lambda p: -p[1])[:5])
print("max over heads of attention on the colour token: mean %.3f; mean total attention on the prompt %.3f" % (np.mean(colour_att), np.mean(other_att)))
print("final hidden state at the last position: |x_a - x_b| %.3f vs |x| %.3f" % (np.mean(hid_diff), np.mean(hid_norm)))
