#!/usr/bin/python3
"""Make test/fixtures/tiny.onnx and tiny.onnx.json (torch's own param names, shapes and count).

Run with Debian's python3-torch: /usr/bin/python3 scripts/make-onnx-fixture.py
"""
import json
import os

import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(81, 16)
        self.fc = torch.nn.Linear(16, 33)
        self.ln = torch.nn.LayerNorm(33)

    def forward(self, ids):
        return self.ln(self.fc(self.emb(ids)))


def main():
    torch.manual_seed(0)
    model = Tiny()
    out = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures")
    torch.onnx.export(model, (torch.zeros(2, 5, dtype=torch.long),), os.path.join(out, "tiny.onnx"),
                      input_names=["ids"], output_names=["out"], do_constant_folding=False)
    shapes = {name: list(p.shape) for name, p in model.named_parameters()}
    with open(os.path.join(out, "tiny.onnx.json"), "w") as f:
        json.dump({"torch_version": torch.__version__, "params": sum(p.numel() for p in model.parameters()), "shapes": shapes}, f, indent=1)


if __name__ == "__main__":
    main()
