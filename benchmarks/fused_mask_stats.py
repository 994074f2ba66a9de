"""What a fused CPU kernel for the masks' |F| statistics would do to GLAM / global mask time.

A decision aid for issue #3's missed goal (GLAM mask time / global mask time <= 1.5), not part of
the library: it JIT-compiles a small C++ (OpenMP via ATen) kernel that reads F once and writes
both statistics of ``glamd_core.masks.abs_statistics`` -- the mean of |F| over channels and the
sum of |F| over every patch of every channel -- checks it against the PyTorch version, then
measures the ratio with the library's statistics and with the kernel's, in one run. The global
mask uses the same kernel with one patch per map, so both sides gain from fusion.

    python benchmarks/fused_mask_stats.py [--repeats 12]

Needs a C++ compiler and ninja (``/usr/bin/ninja`` or ``pip install ninja``); compiling takes
about a minute the first time (cached by torch under ~/.cache/torch_extensions).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.cpp_extension import load_inline

from distill_speed import mask_ratio, pyramid  # noqa: E402  (benchmarks/ is the script's folder)
from glamd_core import masks

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

// One pass over x (B x C x H x W, float32, contiguous): mean over channels of |x| (B x 1 x H x W)
// and the sum of |x| over every p x p patch of every channel (B x C x nh x nw). A task owns one
// band of p rows of one image, so it alone writes those spatial rows and that row of patches.
std::vector<torch::Tensor> abs_statistics(torch::Tensor x, int64_t p) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.device().is_cpu(), "float32 CPU B x C x H x W");
  x = x.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t nh = (H + p - 1) / p, nw = (W + p - 1) / p;
  auto spatial = torch::zeros({B, 1, H, W}, x.options());
  auto patches = torch::zeros({B, C, nh, nw}, x.options());
  const float* X = x.data_ptr<float>();
  float* S = spatial.data_ptr<float>();
  float* P = patches.data_ptr<float>();
  at::parallel_for(0, B * nh, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> band_row(W);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / nh, band = t % nh, h0 = band * p, h1 = std::min(H, h0 + p);
      float* s = S + b * H * W;
      for (int64_t c = 0; c < C; ++c) {
        const float* xc = X + (b * C + c) * H * W;
        std::fill(band_row.begin(), band_row.end(), 0.f);
        for (int64_t h = h0; h < h1; ++h) {
          const float* row = xc + h * W;
          float* srow = s + h * W;
          float* acc = band_row.data();
          for (int64_t w = 0; w < W; ++w) {  // contiguous: vectorised
            const float v = std::fabs(row[w]);
            srow[w] += v;
            acc[w] += v;
          }
        }
        float* pc = P + ((b * C + c) * nh + band) * nw;
        for (int64_t j = 0; j < nw; ++j) {
          float sum = 0.f;
          for (int64_t w = j * p, w1 = std::min(W, w + p); w < w1; ++w) sum += band_row[w];
          pc[j] = sum;
        }
      }
      const float inv_c = 1.f / static_cast<float>(C);
      for (int64_t i = h0 * W; i < h1 * W; ++i) s[i] *= inv_c;
    }
  });
  return {spatial, patches};
}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=12)
    a = p.parse_args()
    ext = load_inline("glamd_fused_mask_stats", cpp_sources=SOURCE, functions=["abs_statistics"],
                      extra_cflags=["-O3", "-march=native"], verbose=False)
    torch.manual_seed(0)
    library_version = masks.abs_statistics

    def fused(feat, patch_size):
        return tuple(ext.abs_statistics(feat, min(patch_size, max(feat.shape[-2:]))))

    for shape, p_ in (((2, 256, 100, 152), 7), ((2, 16, 20, 23), 7), ((3, 8, 5, 9), 7), ((2, 8, 9, 9), 100)):
        f = torch.randn(shape)
        for mine, ref in zip(fused(f, p_), library_version(f, p_)):
            torch.testing.assert_close(mine, ref.reshape(mine.shape), rtol=1e-4, atol=1e-4)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; fused statistics match the library's")

    for name, feats in (("paper scale: 2 x 256 x P3-P7 of 800x1216", pyramid(2, 256, 800, 1216)),
                        ("cpu profile: 8 x 64 x P3-P7 of 128x128", pyramid(8, 64, 128, 128))):
        repeats = max(3, a.repeats // 4) if "paper" in name else a.repeats
        for label, stats in (("library statistics", library_version), ("fused kernel", fused)):
            masks.abs_statistics = stats
            try:
                t_glam, t_global = mask_ratio(feats, repeats)
            finally:
                masks.abs_statistics = library_version
            print(f"{name}, {label}: GLAM {1e3 * t_glam:.2f} ms, global {1e3 * t_global:.2f} ms, "
                  f"ratio {t_glam / t_global:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
