# A1111's hypernetwork loading and eval-mode forward, copied from modules/hypernetworks/hypernetwork.py @3157fe28
# (HypernetworkModule, parse_dropout_structure, Hypernetwork.load, apply_single_hypernetwork) without the webui
# imports (devices, shared). Used by test/hypernetwork/file.test.ts: it loads the .pt files we write, exactly as
# A1111 would (strict load_state_dict into the sequence its settings describe), and prints JSON:
#   {"version", "activation_names", "files": {path: {"types": {...}, "sizes": [...], "outputs": {size: {m: [k, v]}}}}}
import inspect
import json
import math
import sys

import torch


class HypernetworkModule(torch.nn.Module):
    activation_dict = {
        "linear": torch.nn.Identity,
        "relu": torch.nn.ReLU,
        "leakyrelu": torch.nn.LeakyReLU,
        "elu": torch.nn.ELU,
        "swish": torch.nn.Hardswish,
        "tanh": torch.nn.Tanh,
        "sigmoid": torch.nn.Sigmoid,
    }
    activation_dict.update({cls_name.lower(): cls_obj for cls_name, cls_obj in inspect.getmembers(torch.nn.modules.activation) if inspect.isclass(cls_obj) and cls_obj.__module__ == 'torch.nn.modules.activation'})

    def __init__(self, dim, state_dict=None, layer_structure=None, activation_func=None, weight_init='Normal',
                 add_layer_norm=False, activate_output=False, dropout_structure=None):
        super().__init__()
        self.multiplier = 1.0
        assert layer_structure is not None, "layer_structure must not be None"
        assert layer_structure[0] == 1, "Multiplier Sequence should start with size 1!"
        assert layer_structure[-1] == 1, "Multiplier Sequence should end with size 1!"
        linears = []
        for i in range(len(layer_structure) - 1):
            linears.append(torch.nn.Linear(int(dim * layer_structure[i]), int(dim * layer_structure[i+1])))
            if activation_func == "linear" or activation_func is None or (i >= len(layer_structure) - 2 and not activate_output):
                pass
            elif activation_func in self.activation_dict:
                linears.append(self.activation_dict[activation_func]())
            else:
                raise RuntimeError(f'hypernetwork uses an unsupported activation function: {activation_func}')
            if add_layer_norm:
                linears.append(torch.nn.LayerNorm(int(dim * layer_structure[i+1])))
            if dropout_structure is not None and dropout_structure[i+1] > 0:
                assert 0 < dropout_structure[i+1] < 1, "Dropout probability should be 0 or float between 0 and 1!"
                linears.append(torch.nn.Dropout(p=dropout_structure[i+1]))
        self.linear = torch.nn.Sequential(*linears)
        if state_dict is not None:
            self.fix_old_state_dict(state_dict)
            self.load_state_dict(state_dict)

    def fix_old_state_dict(self, state_dict):
        changes = {'linear1.bias': 'linear.0.bias', 'linear1.weight': 'linear.0.weight',
                   'linear2.bias': 'linear.1.bias', 'linear2.weight': 'linear.1.weight'}
        for fr, to in changes.items():
            x = state_dict.get(fr, None)
            if x is None:
                continue
            del state_dict[fr]
            state_dict[to] = x

    def forward(self, x):
        return x + self.linear(x) * (self.multiplier if not self.training else 1)


def parse_dropout_structure(layer_structure, use_dropout, last_layer_dropout):
    if layer_structure is None:
        layer_structure = [1, 2, 1]
    if not use_dropout:
        return [0] * len(layer_structure)
    dropout_values = [0]
    dropout_values.extend([0.3] * (len(layer_structure) - 3))
    if last_layer_dropout:
        dropout_values.append(0.3)
    else:
        dropout_values.append(0)
    dropout_values.append(0)
    return dropout_values


def load(state_dict):
    """Hypernetwork.load, from the dict on: settings with A1111's defaults, then one module pair per int key."""
    layer_structure = state_dict.get('layer_structure', [1, 2, 1])
    activation_func = state_dict.get('activation_func', None)
    weight_init = state_dict.get('weight_initialization', 'Normal')
    add_layer_norm = state_dict.get('is_layer_norm', False)
    dropout_structure = state_dict.get('dropout_structure', None)
    use_dropout = True if dropout_structure is not None and any(dropout_structure) else state_dict.get('use_dropout', False)
    activate_output = state_dict.get('activate_output', True)
    last_layer_dropout = state_dict.get('last_layer_dropout', False)
    if dropout_structure is None:
        dropout_structure = parse_dropout_structure(layer_structure, use_dropout, last_layer_dropout)
    layers = {}
    for size, sd in state_dict.items():
        if type(size) == int:
            layers[size] = tuple(
                HypernetworkModule(size, sd[i], layer_structure, activation_func, weight_init, add_layer_norm,
                                   activate_output, dropout_structure).eval()
                for i in (0, 1))
    return layers


def type_name(v):
    if v is None:
        return 'None'
    if isinstance(v, list):
        return [type_name(x) for x in v]
    if isinstance(v, tuple):
        return {'tuple': [type_name(x) for x in v]}
    if isinstance(v, dict):
        return {'dict' if type(v) is dict else type(v).__name__: {k: type_name(x) for k, x in v.items()}}
    if isinstance(v, torch.Tensor):
        return f'Tensor {v.dtype} {list(v.shape)} grad={v.requires_grad}'
    return type(v).__name__


def context(size):
    """[2, 3, size]: float32(sin(0.1 * (b * 3 * size + t * size + c + 1)))."""
    vals = [[[math.sin(0.1 * (b * 3 * size + t * size + c + 1)) for c in range(size)] for t in range(3)] for b in range(2)]
    return torch.tensor(vals, dtype=torch.float32)


def main():
    major = int(torch.__version__.split('.')[0])
    out = {'version': torch.__version__, 'activation_names': sorted(HypernetworkModule.activation_dict), 'files': {}}
    for path in sys.argv[1:]:
        # torch 1.13's weights_only loader rejects every Python float, so it can only check files on torch >= 2
        d = torch.load(path, map_location='cpu', weights_only=major >= 2)
        entry = {'types': {str(k) if isinstance(k, int) else k: type_name(v) for k, v in d.items()},
                 'int_keys': [k for k in d if type(k) == int], 'metadata': {k: v for k, v in d.items() if not isinstance(k, int)},
                 'sequences': {}, 'outputs': {}}
        for size, (k, v) in load(d).items():
            entry['sequences'][size] = [type(m).__name__ for m in k.linear]
            x = context(size)
            res = {}
            with torch.no_grad():
                for m in (1.0, 0.5):
                    k.multiplier = v.multiplier = m
                    res[str(m)] = [k(x).tolist(), v(x).tolist()]
            entry['outputs'][size] = res
        out['files'][path] = entry
    print(json.dumps(out))


main()
