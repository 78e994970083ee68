"""Generate tests/data/lr_reference.json (run once in an environment with torch and optax; not a test).

Usage: python tests/data/gen_lr_reference.py > tests/data/lr_reference.json
Generated with torch 2.13.0+cpu and optax 0.2.8.
"""
import json, torch, optax, warnings
warnings.simplefilter("ignore")
def torch_seq(cls, n, **kw):
    p = torch.nn.Parameter(torch.zeros(1)); opt = torch.optim.SGD([p], lr=kw.pop("lr", 1.0))
    s = getattr(torch.optim.lr_scheduler, cls)(opt, **kw); out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"]); opt.step(); s.step()
    return out
ref = {"torch": {
 "CosineAnnealingLR": [dict(T_max=10, eta_min=0.0), torch_seq("CosineAnnealingLR", 25, T_max=10)],
 "CosineAnnealingLR_min": [dict(T_max=7, eta_min=0.05), torch_seq("CosineAnnealingLR", 16, T_max=7, eta_min=0.05)],
 "OneCycleLR": [dict(max_lr=1.0, total_steps=10), torch_seq("OneCycleLR", 10, max_lr=1.0, total_steps=10)],
 "OneCycleLR_b": [dict(max_lr=0.5, total_steps=23, pct_start=0.25), torch_seq("OneCycleLR", 23, max_lr=0.5, total_steps=23, pct_start=0.25)],
 "StepLR": [dict(step_size=3, gamma=0.5), torch_seq("StepLR", 10, step_size=3, gamma=0.5)],
 "MultiStepLR": [dict(milestones=[2, 5], gamma=0.1), torch_seq("MultiStepLR", 8, milestones=[2, 5], gamma=0.1)],
 "ExponentialLR": [dict(gamma=0.9), torch_seq("ExponentialLR", 8, gamma=0.9)],
 "LinearLR": [dict(start_factor=0.25, end_factor=1.0, total_iters=4), torch_seq("LinearLR", 8, start_factor=0.25, end_factor=1.0, total_iters=4)],
 "PolynomialLR": [dict(total_iters=6, power=2.0), torch_seq("PolynomialLR", 9, total_iters=6, power=2.0)],
 "ConstantLR": [dict(factor=0.5, total_iters=3), torch_seq("ConstantLR", 6, factor=0.5, total_iters=3)],
 "CosineAnnealingWarmRestarts": [dict(T_0=4, T_mult=2, eta_min=0.01), torch_seq("CosineAnnealingWarmRestarts", 20, T_0=4, T_mult=2, eta_min=0.01)],
 "CosineAnnealingWarmRestarts_1": [dict(T_0=5), torch_seq("CosineAnnealingWarmRestarts", 12, T_0=5)],
}, "optax": {
 "cosine_decay_schedule": [dict(init_value=1.0, decay_steps=10, alpha=0.1), [float(optax.cosine_decay_schedule(1.0, 10, alpha=0.1)(t)) for t in range(15)]],
 "cosine_decay_schedule_p": [dict(init_value=2.0, decay_steps=8, exponent=2.0), [float(optax.cosine_decay_schedule(2.0, 8, exponent=2.0)(t)) for t in range(12)]],
 "exponential_decay": [dict(init_value=1.0, transition_steps=3, decay_rate=0.5, staircase=True), [float(optax.exponential_decay(1.0, 3, 0.5, staircase=True)(t)) for t in range(10)]],
 "exponential_decay_c": [dict(init_value=1.0, transition_steps=2, decay_rate=0.3, transition_begin=2, end_value=0.05), [float(optax.exponential_decay(1.0, 2, 0.3, transition_begin=2, end_value=0.05)(t)) for t in range(12)]],
 "polynomial_schedule": [dict(init_value=1.0, end_value=0.1, power=2, transition_steps=5), [float(optax.polynomial_schedule(1.0, 0.1, 2, 5)(t)) for t in range(8)]],
 "warmup_cosine_decay_schedule": [dict(init_value=0.0, peak_value=1.0, warmup_steps=3, decay_steps=10, end_value=0.01), [float(optax.warmup_cosine_decay_schedule(0.0, 1.0, 3, 10, 0.01)(t)) for t in range(14)]],
}}
print(json.dumps(ref))
