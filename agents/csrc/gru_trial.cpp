// The GRU of RL² over a whole trial, forward and backward, in one C++ call per direction
// (agents/gru_fused.py). torch.nn.GRUCell's equations:
//
//   gi = x W_ih^T + b_ih            (computed outside, over all steps at once, by PyTorch)
//   gh = h W_hh^T + b_hh            (one GEMM per step, here)
//   r = σ(gi_r + gh_r), z = σ(gi_z + gh_z), n = tanh(gi_n + r ⊙ gh_n)
//   h' = (1 - z) ⊙ n + z ⊙ h
//
// Step t outputs h' (out[t]); the state it passes on is h' where active[t] is true and h otherwise
// (metabench.agents.base.keep_inactive). The backward carries the state's gradient back step by step
// (one GEMM per step, dgh W_hh) and forms W_hh's gradient at the end in one GEMM over all steps;
// everything element-wise runs in plain loops over environments, split across torch's intra-op threads
// (each environment's numbers are its own, so the result does not depend on the thread count).

#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace {

void check_inputs(const at::Tensor& gi, const at::Tensor& h0, const at::Tensor& active, const at::Tensor& w_hh,
                  const at::Tensor& b_hh) {
  TORCH_CHECK(gi.dim() == 3 && gi.size(2) % 3 == 0, "gi must be [T, B, 3H]");
  const int64_t B = gi.size(1), H = gi.size(2) / 3;
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H, "h0 must be [B, H]");
  TORCH_CHECK(active.dim() == 2 && active.size(0) == gi.size(0) && active.size(1) == B, "active must be [T, B]");
  TORCH_CHECK(active.scalar_type() == at::kBool, "active must be bool");
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == 3 * H && w_hh.size(1) == H, "w_hh must be [3H, H]");
  TORCH_CHECK(b_hh.dim() == 1 && b_hh.size(0) == 3 * H, "b_hh must be [3H]");
  for (const auto* t : {&gi, &h0, &w_hh, &b_hh}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == gi.scalar_type(), "CPU tensors of one dtype");
  }
}

}  // namespace

// Returns out [T, B, H] (h' of every step), states [T, B, H] (the state after every step), and what the
// backward needs: the gates r, z, n of every step [T, B, 3H] and the candidate's recurrent part gh_n [T, B, H].
// The gates go through ATen's vectorised sigmoid and tanh (a scalar libm loop over them cost more than the
// GEMMs); the backward then needs no transcendental at all.
std::vector<at::Tensor> gru_forward(at::Tensor gi, at::Tensor h0, at::Tensor active, at::Tensor w_hh,
                                    at::Tensor b_hh) {
  check_inputs(gi, h0, active, w_hh, b_hh);
  gi = gi.contiguous();
  const int64_t T = gi.size(0), B = gi.size(1), H = gi.size(2) / 3;
  auto out = at::empty({T, B, H}, gi.options());
  auto states = at::empty({T, B, H}, gi.options());
  auto rzn = at::empty({T, B, 3 * H}, gi.options());
  auto ghn = at::empty({T, B, H}, gi.options());
  auto gh = at::empty({B, 3 * H}, gi.options());
  const auto w_t = w_hh.t();
  const auto keep = active.unsqueeze(-1);
  at::Tensor h = h0.contiguous();
  for (int64_t t = 0; t < T; ++t) {
    at::addmm_out(gh, b_hh, h, w_t);
    const at::Tensor gi_t = gi[t], rzn_t = rzn[t];
    at::Tensor out_t = out[t], states_t = states[t];
    at::Tensor rz = rzn_t.narrow(1, 0, 2 * H), n = rzn_t.narrow(1, 2 * H, H);
    at::sigmoid_out(rz, gi_t.narrow(1, 0, 2 * H) + gh.narrow(1, 0, 2 * H));
    ghn[t].copy_(gh.narrow(1, 2 * H, H));
    at::tanh_out(n, at::addcmul(gi_t.narrow(1, 2 * H, H), rz.narrow(1, 0, H), gh.narrow(1, 2 * H, H)));
    at::addcmul_out(out_t, n, rz.narrow(1, H, H), h - n);  // h' = n + z (h - n)
    at::where_out(states_t, keep[t], out_t, h);
    h = states_t;
  }
  return {out, states, rzn, ghn};
}

// Gradients of gi [T, B, 3H], h0 [B, H], w_hh [3H, H] and b_hh [3H] from those of out and of the final state.
// tbptt > 0: no gradient from step t back into the state entering it where t % tbptt == 0 and t > 0
// (metabench.agents.recurrent.MemoryCore.trial detaches the state there).
std::vector<at::Tensor> gru_backward(at::Tensor d_out, at::Tensor d_last, at::Tensor h0, at::Tensor active,
                                     at::Tensor states, at::Tensor rzn, at::Tensor ghn, at::Tensor w_hh,
                                     int64_t tbptt) {
  const int64_t T = rzn.size(0), B = rzn.size(1), H = rzn.size(2) / 3;
  d_out = d_out.contiguous();
  active = active.contiguous();
  h0 = h0.contiguous();
  auto dgi = at::empty({T, B, 3 * H}, rzn.options());
  auto dgh = at::empty({T, B, 3 * H}, rzn.options());
  at::Tensor dstate = d_last.defined() ? d_last.contiguous().clone() : at::zeros({B, H}, rzn.options());
  at::Tensor dprev = at::empty({B, H}, rzn.options());
  AT_DISPATCH_FLOATING_TYPES(rzn.scalar_type(), "gru_backward", [&] {
    for (int64_t t = T - 1; t >= 0; --t) {
      const at::Tensor hprev = t > 0 ? states[t - 1] : h0;
      const scalar_t* g_p = rzn.data_ptr<scalar_t>() + t * B * 3 * H;
      const scalar_t* ghn_p = ghn.data_ptr<scalar_t>() + t * B * H;
      const scalar_t* hp_p = hprev.data_ptr<scalar_t>();
      const scalar_t* do_p = d_out.data_ptr<scalar_t>() + t * B * H;
      const scalar_t* ds_p = dstate.data_ptr<scalar_t>();
      const bool* a_p = active.data_ptr<bool>() + t * B;
      scalar_t* dgi_p = dgi.data_ptr<scalar_t>() + t * B * 3 * H;
      scalar_t* dgh_p = dgh.data_ptr<scalar_t>() + t * B * 3 * H;
      scalar_t* dp_p = dprev.data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const scalar_t* gb = g_p + b * 3 * H;
          const scalar_t* ghnb = ghn_p + b * H;
          const scalar_t* hpb = hp_p + b * H;
          const scalar_t* dob = do_p + b * H;
          const scalar_t* dsb = ds_p + b * H;
          scalar_t* dgib = dgi_p + b * 3 * H;
          scalar_t* dghb = dgh_p + b * 3 * H;
          scalar_t* dpb = dp_p + b * H;
          const scalar_t carried = a_p[b] ? scalar_t(1) : scalar_t(0);
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t r = gb[j], z = gb[H + j], n = gb[2 * H + j];
            const scalar_t dh = dob[j] + carried * dsb[j];
            const scalar_t dpre_n = dh * (scalar_t(1) - z) * (scalar_t(1) - n * n);
            const scalar_t dpre_z = dh * (hpb[j] - n) * z * (scalar_t(1) - z);
            const scalar_t dpre_r = dpre_n * ghnb[j] * r * (scalar_t(1) - r);
            dgib[j] = dpre_r;
            dgib[H + j] = dpre_z;
            dgib[2 * H + j] = dpre_n;
            dghb[j] = dpre_r;
            dghb[H + j] = dpre_z;
            dghb[2 * H + j] = dpre_n * r;
            dpb[j] = dh * z + (scalar_t(1) - carried) * dsb[j];
          }
        }
      });
      dprev.addmm_(dgh[t], w_hh);  // the state's gradient through gh = h W_hh^T + b_hh
      if (tbptt > 0 && t > 0 && t % tbptt == 0) {
        dstate.zero_();
      } else {
        dstate.copy_(dprev);
      }
    }
  });
  const at::Tensor hprev_all = T > 1 ? at::cat({h0.unsqueeze(0), states.narrow(0, 0, T - 1)}, 0) : h0.unsqueeze(0);
  const at::Tensor dgh2 = dgh.view({T * B, 3 * H});
  const at::Tensor dw_hh = at::mm(dgh2.t(), hprev_all.reshape({T * B, H}));
  const at::Tensor db_hh = dgh2.sum(0);
  return {dgi, dstate, dw_hh, db_hh};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &gru_forward, "GRU over a trial: out, states, gates r z n, gh_n");
  m.def("backward", &gru_backward, "GRU trial backward: d gi, d h0, d w_hh, d b_hh");
}
