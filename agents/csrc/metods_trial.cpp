// MetODS over a whole trial: forward and backward of the plastic core in one C++ call
// (agents/metods_fused.py builds it, wraps it as a torch.autograd.Function and says what it covers).
//
// The step (agents/metods.py, symbolic form), per environment, W = W_{t-1}:
//
//     z_s = c_{s-1} W v_{s-1} + sum_{r <= s-2} a_{s-1,r} v_r * (alpha (w_r * v_{s-1}))     s = 1..S
//     v_s = sum_{l < s} kappa[s,l] v_l + kappa[s,s] sigma(z_s),
//     w_r = L v_r (linear), v_r (vanilla) or M2 tanh(M1 v_r + c1) + c2 (MLP)
//     W_t = c_S W + alpha * sum_{r < S} a_{S,r} v_r w_r^T       (W_t = W_{t-1} where inactive)
//
// with c, a the weights of W_{t-1} and of each write in W^(s), built from beta. v0 (the encoder's
// output) comes in for all steps at once; h = v_S goes out.
//
// Layout. Each environment's state is kept transposed, X = W^T (row j of X = column j of W), rows
// padded to NP = a whole number of SIMD vectors (zeros in the padding stay zero through every
// operation). In that layout the S reads W v of a step and the write are row-wise axpy / elementwise
// over contiguous rows; the only dot-product form (a row times a vector, needing a horizontal sum)
// left is W^T gz in the backward, done LANES rows at a time (matvec_rows, a shuffle butterfly). Per
// step and environment the forward is S matrix-vector products with X, S with L, S(S-1)/2 with alpha,
// and a rank-S write; all the work of one environment's step is done while its X is in cache (the
// loop is environment-outer), and passes over the rows alternate direction so that the rows the last
// pass touched are still in L1 (X, L^T and alpha^T together do not fit it at N = 64).
//
// Backward. The forward saves X only at checkpoints every k steps. The backward walks the segments
// last to first: recompute the segment's steps from its checkpoint (keeping each step's X, the write's
// outer product P and the step's small vectors), then go back through it. The gradient of the state is
// carried in the same transposed layout; one pass over its rows per step finishes gW_{t-1} from the
// pending terms of step t and does everything of step t-1 that needs gW_{t-1} (alpha's gradient from
// the write, G w_r and G^T v_r with G = alpha * gW, the gradient of c_S); the rest of the step's
// backward is matrix-vector products with L, W_{t-1} and alpha and vector work. Parameter gradients are
// accumulated per environment (kappa, c and a lane-wise, summed across lanes once) and summed in
// environment order at the end, so they do not depend on how many threads ran (environments are split
// over at::parallel_for). Low-rank parameter terms (alpha from the reads, L) are applied once per
// segment and environment as one register-blocked rank-K update.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#include <sleef.h>  // float64 tanh: the vector tanh PyTorch itself uses (exported by libtorch_cpu)
#endif

namespace metods {

#if defined(__AVX512F__)
constexpr int VBYTES = 64;
#elif defined(__AVX__)
constexpr int VBYTES = 32;
#else
constexpr int VBYTES = 16;
#endif

// Inner loops over a row's vectors, recursions and lanes: unrolled so that accumulators stay in registers.
#define UNROLL _Pragma("GCC unroll 16")

constexpr int SMAX = 8;    // recursions supported (compiled-in S: 1, 2, 4; others through the generic path)
constexpr int NVMAX = 32;  // vectors per row in the generic path (N <= 32 * LANES)

template <typename T> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(VBYTES))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(VBYTES))); };

enum Sigma { TANH = 0, RELU = 1, IDENTITY = 2 };

// Horizontal sums of LANES vectors at once: lane i of the result is the sum of a[i]'s lanes.
// A butterfly of two-source shuffles (log2(LANES) levels): ~3 instructions per row instead of ~8.
template <int L, int M, bool HI>
constexpr int perm_index(int o) {
  const int P = L / M, H = P / 2, row = o / H, k = o % H;
  return (row < M ? row * P + k : L + (row - M) * P + k) + (HI ? H : 0);
}
template <int L, int M, typename V, int... O>
inline V combine(V a, V b, std::integer_sequence<int, O...>) {
  V lo = __builtin_shufflevector(a, b, perm_index<L, M, false>(O)...);
  V hi = __builtin_shufflevector(a, b, perm_index<L, M, true>(O)...);
  return lo + hi;
}
template <int L, int M, typename V>
inline void reduce_level(V* a) {
  for (int i = 0; i < L / (2 * M); ++i)
    a[i] = combine<L, M>(a[2 * i], a[2 * i + 1], std::make_integer_sequence<int, L>{});
  if constexpr (2 * M < L) reduce_level<L, 2 * M>(a);
}

template <typename T>
struct Aligned {  // 64-byte aligned scratch, zeroed
  std::unique_ptr<T, void (*)(void*)> p{nullptr, std::free};
  explicit Aligned(size_t n) {
    size_t bytes = ((n * sizeof(T) + 63) / 64) * 64 + 64;
    p.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
    TORCH_CHECK(p, "MetODS fused kernel: out of memory");
    std::memset(p.get(), 0, bytes);
  }
  T* get() const { return p.get(); }
};

// What every step of every environment shares: padded parameters and the scalar coefficients.
template <typename T>
struct Params {
  int N, NP, nv, S, sigma;
  bool has_L;   // a matrix read of v in the forward pass: L (linear write) or the MLP's first layer
  bool mlp;     // MLP write: w = M2 tanh(M1 v + c1) + c2 (M1 in LT / Lm)
  const T* AT;  // alpha^T, N x NP
  const T* A;   // alpha, N x NP
  const T* LT;  // L^T (linear write) or M1^T (MLP write)
  const T* Lm;  // L or M1
  const T* M2T; // M2^T, M2 and the biases (padded to NP): MLP write only
  const T* M2m;
  const T* c1;
  const T* c2;
  T kappa[SMAX + 1][SMAX + 1];
  T c[SMAX + 1];             // c[s]: weight of W_{t-1} in W^(s)
  T a[SMAX + 1][SMAX + 1];   // a[s][r]: weight in W^(s) of the write made at recursion r + 1 (r < s)
  int nq;                    // S(S-1)/2 read terms through alpha per step
  int nvecs;                 // vectors kept per step (see Vecs)
};

inline int qidx(int s, int r) { return (s - 1) * (s - 2) / 2 + r; }  // s >= 2, r <= s - 2

template <typename T, int SC, int NVC>
struct Kernel {
  typedef typename VecOf<T>::type V;
  static constexpr int LANES = VBYTES / sizeof(T);
  static constexpr int SA = SC ? SC : SMAX;    // array bound for per-recursion accumulators
  static constexpr int NVA = NVC ? NVC : NVMAX;

  static inline V ld(const T* p) { V v; std::memcpy(&v, p, sizeof(V)); return v; }
  static inline void st(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
  static inline V bc(T s) { return s - V{}; }
  static inline T hsum(V v) { T s = 0; for (int i = 0; i < LANES; ++i) s += v[i]; return s; }

  // tanh for float, Cephes' tanhf: x + x^3 P(x^2) below |x| = 0.625, else 1 - 2 / (exp(2|x|) + 1) with
  // Cephes' expf (<= 1.3 ulp from the exact tanh; a third of the cost of Sleef's 1-ulp tanh that torch
  // uses). float64 keeps Sleef's (or libm's).
  static inline V tanh_v(V a) {
    if constexpr (sizeof(T) == 4) {
      typedef int32_t VI __attribute__((vector_size(VBYTES)));
      const V ax = a < 0 ? -a : a;
      const V z = a * a;
      V p = z * bc(-5.70498872745E-3f) + bc(2.06390887954E-2f);
      p = z * p + bc(-5.37397155531E-2f);
      p = z * p + bc(1.33314422036E-1f);
      p = z * p + bc(-3.33332819422E-1f);
      const V small = a + a * z * p;
      V x = ax + ax;
      x = x > bc(18.f) ? bc(18.f) : x;  // tanh(9) rounds to 1; NaN stays NaN
      const V magic = bc(12582912.f);  // 1.5 * 2^23: (y + magic) - magic rounds y to an integer
      const V n = (x * bc(1.44269504088896341f) + magic) - magic;
      V r = x - n * bc(0.693359375f);
      r = r - n * bc(-2.12194440e-4f);
      V q = r * bc(1.9875691500E-4f) + bc(1.3981999507E-3f);
      q = r * q + bc(8.3334519073E-3f);
      q = r * q + bc(4.1665795894E-2f);
      q = r * q + bc(1.6666665459E-1f);
      q = r * q + bc(5.0000001201E-1f);
      q = q * r * r + r + bc(1.f);
      VI bits;
      std::memcpy(&bits, &q, sizeof(V));
      bits += __builtin_convertvector(n, VI) << 23;  // q * 2^n
      V e;
      std::memcpy(&e, &bits, sizeof(V));
      V large = bc(1.f) - bc(2.f) / (e + bc(1.f));
      large = a < 0 ? -large : large;
      return ax < bc(0.625f) ? small : large;
    } else {
#if defined(__AVX512F__)
      return (V)Sleef_tanhd8_u10((__m512d)a);
#elif defined(__AVX2__)
      return (V)Sleef_tanhd4_u10((__m256d)a);
#else
      V r;
      for (int i = 0; i < LANES; ++i) r[i] = std::tanh(a[i]);
      return r;
#endif
    }
  }
  static inline V sigma_v(V z, int sigma) {
    if (sigma == RELU) return z > 0 ? z : V{};
    if (sigma == IDENTITY) return z;
    return tanh_v(z);
  }
  // sigma'(z) from the output rho = sigma(z), as autograd computes it (tanh: 1 - rho^2; relu: rho > 0).
  static inline V dsigma_v(V rho, int sigma) {
    if (sigma == RELU) return rho > 0 ? bc(1) : V{};
    if (sigma == IDENTITY) return bc(1);
    return bc(1) - rho * rho;
  }

  // Per-step vectors, each NP long: V(s) s = 0..S, W(r) = w_r r < S, R(s) = sigma(z_s) and
  // Z(s) = W_{t-1} v_{s-1} s = 1..S, Q(s, r) = alpha (w_r * v_{s-1}); MLP write: H(r) = tanh(M1 v_r + c1).
  struct Vecs {
    T* base; int NP, S;
    T* V_(int s) const { return base + s * NP; }
    T* W_(int r) const { return base + (S + 1 + r) * NP; }
    T* R_(int s) const { return base + (2 * S + s) * NP; }
    T* Z_(int s) const { return base + (3 * S + s) * NP; }
    T* Q_(int s, int r) const { return base + (4 * S + 1 + qidx(s, r)) * NP; }
    static int h_offset(int S) { return 4 * S + 1 + S * (S - 1) / 2; }  // in vectors
    T* H_(int r) const { return base + (h_offset(S) + r) * NP; }
  };

  static inline void add_to(T* a, V x) { st(a, ld(a) + x); }
  // Copy n elements (glibc's memcpy switches to rep movsb at the size of a state, which profiled slow here).
  static inline void copy(T* __restrict dst, const T* __restrict src, int n) {
    int i = 0;
    for (; i + LANES <= n; i += LANES) st(dst + i, ld(src + i));
    for (; i < n; ++i) dst[i] = src[i];
  }

  // Lane-wise partial products of two padded vectors (summed across lanes once, at the end of a trial).
  static inline V vdot(int nv, const T* x, const T* y) {
    V acc = V{};
    UNROLL for (int c = 0; c < nv; ++c) acc += ld(x + c * LANES) * ld(y + c * LANES);
    return acc;
  }

  // y = sum_i x_i M_i (rows of M): the axpy form, accumulators in registers; even and odd rows in two
  // accumulator sets so that one vector's FMAs are not serialised on their latency.
  // rev: walk the rows last to first (each of these passes may go against the previous pass over the same
  // matrix, so that the rows it touched last are still in L1).
  static inline void vecmat(int N, int NP, int nv, const T* __restrict M, const T* __restrict x, T* __restrict y,
                            bool rev = false) {
    V acc[2][NVA];
    UNROLL for (int c = 0; c < nv; ++c) acc[0][c] = acc[1][c] = V{};
    int k = 0;
    for (; k + 1 < N; k += 2) {
      const int i0 = rev ? N - 1 - k : k, i1 = rev ? i0 - 1 : i0 + 1;
      const V x0 = bc(x[i0]), x1 = bc(x[i1]);
      UNROLL for (int c = 0; c < nv; ++c) {
        acc[0][c] += x0 * ld(M + i0 * NP + c * LANES);
        acc[1][c] += x1 * ld(M + i1 * NP + c * LANES);
      }
    }
    if (k < N) {
      const int i = rev ? 0 : k;
      const V x0 = bc(x[i]);
      UNROLL for (int c = 0; c < nv; ++c) acc[0][c] += x0 * ld(M + i * NP + c * LANES);
    }
    UNROLL for (int c = 0; c < nv; ++c) st(y + c * LANES, acc[0][c] + acc[1][c]);
  }

  // y0 = sum_i x0_i M_i and y1 = sum_i x1_i M_i in one pass over M.
  static inline void vecmat2(int N, int NP, int nv, const T* __restrict M, const T* __restrict x0,
                             const T* __restrict x1, T* __restrict y0, T* __restrict y1, bool rev = false) {
    V a0[NVA], a1[NVA];
    UNROLL for (int c = 0; c < nv; ++c) a0[c] = a1[c] = V{};
    for (int k = 0; k < N; ++k) {
      const int i = rev ? N - 1 - k : k;
      const V b0 = bc(x0[i]), b1 = bc(x1[i]);
      const T* m = M + i * NP;
      UNROLL for (int c = 0; c < nv; ++c) {
        const V mv = ld(m + c * LANES);
        a0[c] += b0 * mv;
        a1[c] += b1 * mv;
      }
    }
    UNROLL for (int c = 0; c < nv; ++c) {
      st(y0 + c * LANES, a0[c]);
      st(y1 + c * LANES, a1[c]);
    }
  }

  // ys[r] = sum_i xs[r]_i M_i for r < nr, one pass over M.
  static inline void vecmat_multi(int N, int NP, int nv, const T* __restrict M, int nr, const T* __restrict xs,
                                  T* __restrict ys, bool rev = false) {
    if (nr == 1) return vecmat(N, NP, nv, M, xs, ys, rev);
    if (nr == 2) return vecmat2(N, NP, nv, M, xs, xs + NP, ys, ys + NP, rev);
    V acc[SA][NVA];
    UNROLL for (int r = 0; r < SA; ++r)
      if (r < nr) UNROLL for (int c = 0; c < nv; ++c) acc[r][c] = V{};
    for (int k = 0; k < N; ++k) {
      const int i = rev ? N - 1 - k : k;
      const T* m = M + i * NP;
      V mv[NVA];
      UNROLL for (int c = 0; c < nv; ++c) mv[c] = ld(m + c * LANES);
      UNROLL for (int r = 0; r < SA; ++r)
        if (r < nr) {
          const V x = bc(xs[r * NP + i]);
          UNROLL for (int c = 0; c < nv; ++c) acc[r][c] += x * mv[c];
        }
    }
    UNROLL for (int r = 0; r < SA; ++r)
      if (r < nr) UNROLL for (int c = 0; c < nv; ++c) st(ys + r * NP + c * LANES, acc[r][c]);
  }

  // y_j = M_j . x for every row j (padded rows give 0): the dot form, LANES rows per butterfly.
  static inline void matvec_rows(int N, int NP, int nv, const T* __restrict M, const T* __restrict x,
                                 T* __restrict y, bool rev = false) {
    V xv[NVA];
    UNROLL for (int c = 0; c < nv; ++c) xv[c] = ld(x + c * LANES);
    for (int kb = 0; kb < NP; kb += LANES) {
      const int jb = rev ? NP - LANES - kb : kb;
      V acc[LANES];
      UNROLL for (int jj = 0; jj < LANES; ++jj) {
        acc[jj] = V{};
        const int j = jb + jj;
        if (j < N) {
          const T* m = M + j * NP;
          UNROLL for (int c = 0; c < nv; ++c) acc[jj] += ld(m + c * LANES) * xv[c];
        }
      }
      reduce_level<LANES, 1>(acc);
      st(y + jb, acc[0]);
    }
  }

  // Acc_j += sum_q X_q[j] Y_q over records q = (step i < steps, r < per), X_q = X + i xs + r NP,
  // Y_q = Y + i ys + r NP: a rank-(steps * per) update, each row's accumulators in registers.
  static inline void rank_update(int N, int NP, int nv, T* __restrict Acc, int steps, int per,
                                 const T* __restrict X, size_t xs, const T* __restrict Y, size_t ys) {
    int j = 0;
    for (; j + 1 < N; j += 2) {  // two rows at once: each loaded Y vector feeds two FMAs
      T* a = Acc + j * NP;
      V acc0[NVA], acc1[NVA];
      UNROLL for (int c = 0; c < nv; ++c) {
        acc0[c] = ld(a + c * LANES);
        acc1[c] = ld(a + NP + c * LANES);
      }
      for (int i = 0; i < steps; ++i)
        for (int r = 0; r < per; ++r) {
          const T* xq = X + i * xs + r * NP + j;
          const V x0 = bc(xq[0]), x1 = bc(xq[1]);
          const T* y = Y + i * ys + r * NP;
          UNROLL for (int c = 0; c < nv; ++c) {
            const V yv = ld(y + c * LANES);
            acc0[c] += x0 * yv;
            acc1[c] += x1 * yv;
          }
        }
      UNROLL for (int c = 0; c < nv; ++c) {
        st(a + c * LANES, acc0[c]);
        st(a + NP + c * LANES, acc1[c]);
      }
    }
    if (j < N) {
      T* a = Acc + j * NP;
      V acc[NVA];
      UNROLL for (int c = 0; c < nv; ++c) acc[c] = ld(a + c * LANES);
      for (int i = 0; i < steps; ++i)
        for (int r = 0; r < per; ++r) {
          const V x = bc(X[i * xs + r * NP + j]);
          const T* y = Y + i * ys + r * NP;
          UNROLL for (int c = 0; c < nv; ++c) acc[c] += x * ld(y + c * LANES);
        }
      UNROLL for (int c = 0; c < nv; ++c) st(a + c * LANES, acc[c]);
    }
  }

  // One step of one environment: the S recursions from v0 and X_in (= W_{t-1}^T), the step's vectors
  // into `vec`; if X_out is given, the written state into X_out (may be X_in: elementwise), and if PT_out
  // is given, the write's outer product P^T = sum_r w_r (a_{S,r} v_r)^T into it (for the backward).
  static void step_forward(const Params<T>& p, const T* X_in, T* X_out, T* PT_out, const T* v0, const Vecs& vec,
                           T* atil) {
    const int S = SC ? SC : p.S, nv = NVC ? NVC : p.nv, NP = p.NP, N = p.N, sigma = p.sigma;
    const T* __restrict AT = p.AT;
    const T* __restrict LT = p.LT;
    T* v_0 = vec.V_(0);
    copy(v_0, v0, N);
    std::fill(v_0 + N, v_0 + NP, T(0));
    for (int s = 1; s <= S; ++s) {
      const T* __restrict v = vec.V_(s - 1);
      const int nr = s - 1;  // reads through alpha: writes r = 0..s-2
      // y_r = w_r * v_{s-1}, the vectors alpha reads (broadcast from memory in the pass below).
      T* __restrict y = atil;
      for (int r = 0; r < nr; ++r)
        UNROLL for (int c = 0; c < nv; ++c) st(y + r * NP + c * LANES, ld(vec.W_(r) + c * LANES) * ld(v + c * LANES));
      V accZ[NVA], accW[NVA], accQ[SA][NVA];
      // One pass over the rows j of X, L^T and alpha^T: W v, L v and alpha (w_r * v) for r < nr.
      auto pass = [&]<bool HAS_L>() {
        UNROLL for (int c = 0; c < nv; ++c) accZ[c] = accW[c] = V{};
        UNROLL for (int r = 0; r < SA; ++r)
          if (r < nr) UNROLL for (int c = 0; c < nv; ++c) accQ[r][c] = V{};
        for (int jj = 0; jj < N; ++jj) {
          // Odd recursions walk the rows backwards: the rows the previous pass touched last are still in L1
          // (X, L^T and alpha^T together overflow it). The order depends on s only: replays are bitwise equal.
          const int j = (s & 1) ? N - 1 - jj : jj;
          const V bvj = bc(v[j]);
          const T* x = X_in + j * NP;
          UNROLL for (int c = 0; c < nv; ++c) accZ[c] += bvj * ld(x + c * LANES);
          if constexpr (HAS_L) {
            const T* l = LT + j * NP;
            UNROLL for (int c = 0; c < nv; ++c) accW[c] += bvj * ld(l + c * LANES);
          }
          if (nr > 0) {
            const T* at = AT + j * NP;
            V atv[NVA];
            UNROLL for (int c = 0; c < nv; ++c) atv[c] = ld(at + c * LANES);
            UNROLL for (int r = 0; r < SA; ++r)
              if (r < nr) {
                const V yr = bc(y[r * NP + j]);
                UNROLL for (int c = 0; c < nv; ++c) accQ[r][c] += yr * atv[c];
              }
          }
        }
      };
      if (p.has_L) pass.template operator()<true>();
      else pass.template operator()<false>();
      T* z_raw = vec.Z_(s);
      T* w = vec.W_(s - 1);
      if (p.mlp) {  // w = M2 h + c2, h = tanh(M1 v + c1) (accW = M1 v); padding stays zero
        T* hid = vec.H_(s - 1);
        UNROLL for (int c = 0; c < nv; ++c) st(hid + c * LANES, tanh_v(accW[c] + ld(p.c1 + c * LANES)));
        vecmat(N, NP, nv, p.M2T, hid, w, s & 1);
        UNROLL for (int c = 0; c < nv; ++c) add_to(w + c * LANES, ld(p.c2 + c * LANES));
      }
      UNROLL for (int c = 0; c < nv; ++c) {
        st(z_raw + c * LANES, accZ[c]);
        if (!p.mlp) st(w + c * LANES, p.has_L ? accW[c] : ld(v + c * LANES));
      }
      UNROLL for (int r = 0; r < SA; ++r)
        if (r < nr) UNROLL for (int c = 0; c < nv; ++c) st(vec.Q_(s, r) + c * LANES, accQ[r][c]);
      const V cs = bc(p.c[s - 1]), kss = bc(p.kappa[s][s]);
      T* rho = vec.R_(s);
      T* vs = vec.V_(s);
      UNROLL for (int c = 0; c < nv; ++c) {
        V z = cs * accZ[c];
        UNROLL for (int r = 0; r < SA; ++r)
          if (r < nr) z += bc(p.a[s - 1][r]) * ld(vec.V_(r) + c * LANES) * accQ[r][c];
        const V rh = sigma_v(z, sigma);
        st(rho + c * LANES, rh);
        V out = V{};
        for (int l = 0; l < s; ++l) out += bc(p.kappa[s][l]) * ld(vec.V_(l) + c * LANES);
        st(vs + c * LANES, out + kss * rh);
      }
    }
    if (!X_out && !PT_out) return;
    // The write: X_out = c_S X_in + alpha^T * sum_r w_r (a_{S,r} v_r)^T, row by row.
    for (int r = 0; r < S; ++r) {
      const V ar = bc(p.a[S][r]);
      UNROLL for (int c = 0; c < nv; ++c) st(atil + r * NP + c * LANES, ar * ld(vec.V_(r) + c * LANES));
    }
    const T* __restrict wr_[SA];
    UNROLL for (int r = 0; r < SA; ++r) wr_[r] = vec.W_(r < S ? r : 0);
    V av[SA][NVA];
    UNROLL for (int r = 0; r < SA; ++r)
      if (r < S) UNROLL for (int c = 0; c < nv; ++c) av[r][c] = ld(atil + r * NP + c * LANES);
    const V cS = bc(p.c[S]);
    for (int jj = 0; jj < N; ++jj) {
      const int j = (S & 1) ? jj : N - 1 - jj;  // against the last recursion's direction
      const T* x = X_in + j * NP;
      const T* at = AT + j * NP;
      T* xo = X_out ? X_out + j * NP : nullptr;
      V pt[NVA];
      UNROLL for (int c = 0; c < nv; ++c) pt[c] = V{};
      UNROLL for (int r = 0; r < SA; ++r)
        if (r < S) {
          const V wr = bc(wr_[r][j]);
          UNROLL for (int c = 0; c < nv; ++c) pt[c] += wr * av[r][c];
        }
      if (PT_out) UNROLL for (int c = 0; c < nv; ++c) st(PT_out + j * NP + c * LANES, pt[c]);
      if (X_out)
        UNROLL for (int c = 0; c < nv; ++c) st(xo + c * LANES, cS * ld(x + c * LANES) + ld(at + c * LANES) * pt[c]);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Forward over [b0, b1): h, the final state and (if ckpt) the state at every k-th step.
  static void forward(const Params<T>& p, int T_, int B, int b0, int b1, const T* v0, const bool* active,
                      const T* W_init, T* h, T* W_T, T* ckpt, int k) {
    const int N = p.N, NP = p.NP, S = SC ? SC : p.S;
    Aligned<T> Xb(N * NP), vb(p.nvecs * NP), ab(S * NP);
    T* X = Xb.get();
    Vecs vec{vb.get(), NP, S};
    for (int b = b0; b < b1; ++b) {
      const T* Wi = W_init + (size_t)b * N * N;
      for (int j = 0; j < N; ++j)
        for (int i = 0; i < N; ++i) X[j * NP + i] = Wi[i * N + j];
      for (int t = 0; t < T_; ++t) {
        if (ckpt && t % k == 0) copy(ckpt + ((size_t)(t / k) * B + b) * N * NP, X, N * NP);
        const size_t bt = (size_t)t * B + b;
        step_forward(p, X, active[bt] ? X : nullptr, nullptr, v0 + bt * N, vec, ab.get());
        copy(h + bt * N, vec.V_(S), N);
      }
      T* Wo = W_T + (size_t)b * N * N;
      for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) Wo[i * N + j] = X[j * NP + i];
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Backward over environments [b0, b1). Per environment: gv0 rows, gW_init, and its own parameter
  // gradient accumulators (gAT: alpha^T's layout, gL, and the scalars gk, gc, ga).
  struct Grads {
    T* gv0; T* gW_init; T* gAT; T* gL; T* gk; T* gc; T* ga;  // gk, ga: (SMAX+1)^2 per env, gc: SMAX+1
    T* gM2; T* gc1; T* gc2;  // MLP write: M2 (N x NP per env; gL holds M1's), the biases (NP per env)
  };

  static void backward(const Params<T>& p, int T_, int B, int b0, int b1, int k, int tbptt, const T* v0,
                       const bool* active, const T* ckpt, const T* grad_h, const T* grad_W_T, const Grads& g) {
    const int N = p.N, NP = p.NP, S = SC ? SC : p.S, nv = NVC ? NVC : p.nv, nq = p.nq, nvecs = p.nvecs;
    const int sigma = p.sigma;
    const T* __restrict A = p.A;
    const T* __restrict Lm = p.Lm;
    const int kk = std::min(k, std::max(T_, 1));
    constexpr int SQ = (SMAX + 1) * (SMAX + 1);
    // Segment storage: states before each step (k + 1 slots), step vectors, records for rank updates.
    Aligned<T> Xs_b((size_t)(kk + 1) * N * NP), PT_b((size_t)kk * N * NP), vec_b((size_t)kk * nvecs * NP);
    Aligned<T> atil_b(S * NP);
    Aligned<T> E_b((size_t)std::max(kk * nq, 1) * NP), Y_b((size_t)std::max(kk * nq, 1) * NP);
    Aligned<T> GW_b((size_t)kk * S * NP);
    Aligned<T> GZ_b(p.mlp ? (size_t)kk * S * NP : 1);  // MLP write: gradients of M1 v_r + c1 (records for gM1)
    Aligned<T> gX_b(N * NP), Gw_b(S * NP), GTv_b(S * NP), dots_b((size_t)S * NP * LANES);
    Aligned<T> gv_b((S + 1) * NP), tmp_b(2 * NP), gy_b(S * NP);
    Aligned<T> pgz_b(S * NP), pcv_b(S * NP);  // pending terms of the step after: gz_s, c_{s-1} v_{s-1}
    // Lane-wise accumulators of the scalar gradients (kappa, c, a), summed across lanes per environment.
    Aligned<T> coef_b((size_t)(2 * SQ + SMAX + 1) * LANES);
    T* accK = coef_b.get();
    T* accA = accK + SQ * LANES;
    T* accC = accA + SQ * LANES;
    std::vector<int> slot(kk + 1);
    T* gX = gX_b.get();
    T* gv = gv_b.get();
    T* tmp = tmp_b.get();
    T* tmp2 = tmp + NP;

    for (int b = b0; b < b1; ++b) {
      T* gAT = g.gAT + (size_t)b * N * NP;
      T* gL = p.has_L ? g.gL + (size_t)b * N * NP : nullptr;
      T* gM2 = p.mlp ? g.gM2 + (size_t)b * N * NP : nullptr;
      T* gc1 = p.mlp ? g.gc1 + (size_t)b * NP : nullptr;
      T* gc2 = p.mlp ? g.gc2 + (size_t)b * NP : nullptr;
      std::fill(accK, accK + (size_t)(2 * SQ + SMAX + 1) * LANES, T(0));
      const T* gWT = grad_W_T + (size_t)b * N * N;
      std::fill(gX, gX + N * NP, T(0));
      for (int j = 0; j < N; ++j)
        for (int i = 0; i < N; ++i) gX[j * NP + i] = gWT[i * N + j];
      bool pending = false, cut = false;
      T mult = 1;

      const int nseg = (T_ + k - 1) / k;
      for (int m = nseg - 1; m >= 0; --m) {
        const int t0 = m * k, t1 = std::min(T_, t0 + k), len = t1 - t0;
        // Recompute the segment: states before each step and the step vectors.
        copy(Xs_b.get(), ckpt + ((size_t)m * B + b) * N * NP, N * NP);
        slot[0] = 0;
        for (int i = 0; i < len; ++i) {
          const size_t bt = (size_t)(t0 + i) * B + b;
          const bool act = active[(size_t)(t0 + i) * B + b];
          const bool write = act && i + 1 < len;  // the state after the segment is not needed
          Vecs vec{vec_b.get() + (size_t)i * nvecs * NP, NP, S};
          T* Xin = Xs_b.get() + (size_t)slot[i] * N * NP;
          T* Xout = write ? Xs_b.get() + (size_t)(i + 1) * N * NP : nullptr;
          step_forward(p, Xin, Xout, act ? PT_b.get() + (size_t)i * N * NP : nullptr, v0 + bt * N, vec, atil_b.get());
          slot[i + 1] = write ? i + 1 : slot[i];
        }
        for (int i = len - 1; i >= 0; --i) {
          const int t = t0 + i;
          const size_t bt = (size_t)t * B + b;
          const bool act = active[(size_t)t * B + b];
          Vecs vec{vec_b.get() + (size_t)i * nvecs * NP, NP, S};
          const T* Xprev = Xs_b.get() + (size_t)slot[i] * N * NP;
          T* gw = GW_b.get() + (size_t)i * S * NP;  // gradients of w_r: also the records for gL (gM2)
          T* gzw = GZ_b.get() + (size_t)i * S * NP;  // MLP write: gradients of M1 v_r + c1
          T* E = E_b.get() + (size_t)i * nq * NP;     // records for alpha's read terms
          T* Y = Y_b.get() + (size_t)i * nq * NP;
          row_pass(p, vec, Xprev, PT_b.get() + (size_t)i * N * NP, act, pending, cut, mult, pgz_b.get(), pcv_b.get(),
                   gX, gAT, Gw_b.get(), GTv_b.get(), dots_b.get(), accC + S * LANES);
          // The vector recursion back through the step.
          if (act) {
            for (int r = 0; r < S; ++r) {
              const V ar = bc(p.a[S][r]);
              const T* gwr = Gw_b.get() + r * NP;
              UNROLL for (int c = 0; c < nv; ++c) {
                st(gv + r * NP + c * LANES, ar * ld(gwr + c * LANES));
                st(gw + r * NP + c * LANES, ar * ld(GTv_b.get() + r * NP + c * LANES));
              }
              add_to(accA + (S * (SMAX + 1) + r) * LANES, vdot(nv, vec.V_(r), gwr));
            }
          } else {
            std::fill(gv, gv + S * NP, T(0));
            std::fill(gw, gw + S * NP, T(0));
          }
          T* gvS = gv + S * NP;
          copy(gvS, grad_h + bt * N, N);
          std::fill(gvS + N, gvS + NP, T(0));
          for (int s = S; s >= 0; --s) {
            T* gvs = gv + s * NP;
            if (s < S) {  // w_s's gradient is complete: into v_s
              if (p.mlp) {
                // w_s = M2 h_s + c2, h_s = tanh(M1 v_s + c1): gh = M2^T gw_s, gu = gh * (1 - h_s^2), gv_s += M1^T gu
                const T* gws = gw + s * NP;
                T* gu = gzw + s * NP;
                vecmat(N, NP, nv, p.M2m, gws, tmp, s & 1);
                UNROLL for (int c = 0; c < nv; ++c) {
                  const V hc = ld(vec.H_(s) + c * LANES);
                  const V guc = ld(tmp + c * LANES) * (bc(1) - hc * hc);
                  st(gu + c * LANES, guc);
                  add_to(gc1 + c * LANES, guc);
                  add_to(gc2 + c * LANES, ld(gws + c * LANES));
                }
                vecmat(N, NP, nv, Lm, gu, tmp2, !(s & 1));
                UNROLL for (int c = 0; c < nv; ++c) add_to(gvs + c * LANES, ld(tmp2 + c * LANES));
              } else if (p.has_L) {
                // gw_s and gw_{s-1} are both complete here (iteration s only adds to gw_r, r <= s-2): their
                // L^T products in one pass over L, the pair (S-1, S-2), then (S-3, S-4), ...
                if ((S - 1 - s) % 2 == 0) {
                  if (s >= 1) {
                    vecmat2(N, NP, nv, Lm, gw + s * NP, gw + (s - 1) * NP, tmp, tmp2, ((S - 1 - s) / 2) & 1);
                    UNROLL for (int c = 0; c < nv; ++c) add_to(gv + (s - 1) * NP + c * LANES, ld(tmp2 + c * LANES));
                  } else {
                    vecmat(N, NP, nv, Lm, gw + s * NP, tmp);
                  }
                  UNROLL for (int c = 0; c < nv; ++c) add_to(gvs + c * LANES, ld(tmp + c * LANES));
                }
              } else {
                UNROLL for (int c = 0; c < nv; ++c) add_to(gvs + c * LANES, ld(gw + s * NP + c * LANES));
              }
            }
            if (s == 0) break;
            // v_s = sum_l kappa[s,l] v_l + kappa[s,s] sigma(z_s)
            add_to(accK + (s * (SMAX + 1) + s) * LANES, vdot(nv, gvs, vec.R_(s)));
            for (int l = 0; l < s; ++l) add_to(accK + (s * (SMAX + 1) + l) * LANES, vdot(nv, gvs, vec.V_(l)));
            T* gz = pgz_b.get() + (s - 1) * NP;
            const V kss = bc(p.kappa[s][s]);
            UNROLL for (int c = 0; c < nv; ++c)
              st(gz + c * LANES, kss * ld(gvs + c * LANES) * dsigma_v(ld(vec.R_(s) + c * LANES), sigma));
            for (int l = 0; l < s; ++l) {
              const V kl = bc(p.kappa[s][l]);
              UNROLL for (int c = 0; c < nv; ++c) add_to(gv + l * NP + c * LANES, kl * ld(gvs + c * LANES));
            }
            // z_s = c_{s-1} W v_{s-1} + sum_r a_{s-1,r} v_r * q_{s,r}
            T* gvp = gv + (s - 1) * NP;
            add_to(accC + (s - 1) * LANES, vdot(nv, gz, vec.Z_(s)));
            matvec_rows(N, NP, nv, Xprev, gz, tmp, s & 1);
            const V cp = bc(p.c[s - 1]);
            UNROLL for (int c = 0; c < nv; ++c) add_to(gvp + c * LANES, cp * ld(tmp + c * LANES));
            const int nr = s - 1;
            if (nr > 0) {
              T* e = E + qidx(s, 0) * NP;
              T* y = Y + qidx(s, 0) * NP;
              const T* vprev = vec.V_(s - 1);
              for (int r = 0; r < nr; ++r) {
                const V ar = bc(p.a[s - 1][r]);
                const T* q = vec.Q_(s, r);
                const T* vr = vec.V_(r);
                const T* wr = vec.W_(r);
                V d = V{};
                UNROLL for (int c = 0; c < nv; ++c) {
                  const V gzc = ld(gz + c * LANES), qc = ld(q + c * LANES), vrc = ld(vr + c * LANES);
                  d += gzc * vrc * qc;
                  add_to(gv + r * NP + c * LANES, ar * gzc * qc);
                  st(e + r * NP + c * LANES, ar * gzc * vrc);
                  st(y + r * NP + c * LANES, ld(wr + c * LANES) * ld(vprev + c * LANES));
                }
                add_to(accA + ((s - 1) * (SMAX + 1) + r) * LANES, d);
              }
              vecmat_multi(N, NP, nv, A, nr, e, gy_b.get(), s & 1);
              for (int r = 0; r < nr; ++r) {
                const T* gyr = gy_b.get() + r * NP;
                const T* wr = vec.W_(r);
                UNROLL for (int c = 0; c < nv; ++c) {
                  const V gyc = ld(gyr + c * LANES);
                  add_to(gw + r * NP + c * LANES, gyc * ld(vprev + c * LANES));
                  add_to(gvp + c * LANES, gyc * ld(wr + c * LANES));
                }
              }
            }
          }
          copy(g.gv0 + bt * N, gv, N);
          // Pending for gW_{t-1}: c_{s-1} v_{s-1} (gz_s is already in pgz).
          for (int s = 1; s <= S; ++s) {
            const V cp = bc(p.c[s - 1]);
            UNROLL for (int c = 0; c < nv; ++c)
              st(pcv_b.get() + (s - 1) * NP + c * LANES, cp * ld(vec.V_(s - 1) + c * LANES));
          }
          pending = true;
          mult = act ? p.c[S] : T(1);
          cut = tbptt > 0 && t % tbptt == 0 && t > 0;
        }
        // Low-rank parameter terms of the segment: alpha from the reads, L from the writes.
        if (nq) rank_update(N, NP, nv, gAT, len, nq, Y_b.get(), (size_t)nq * NP, E_b.get(), (size_t)nq * NP);
        if (p.has_L)
          rank_update(N, NP, nv, gL, len, S, p.mlp ? GZ_b.get() : GW_b.get(), (size_t)S * NP, vec_b.get(),
                      (size_t)nvecs * NP);
        if (p.mlp)
          rank_update(N, NP, nv, gM2, len, S, GW_b.get(), (size_t)S * NP,
                      vec_b.get() + (size_t)Vecs::h_offset(S) * NP, (size_t)nvecs * NP);
      }
      // gW_init: the pending terms of step 0.
      row_pass(p, Vecs{nullptr, NP, S}, nullptr, nullptr, false, pending, cut, mult, pgz_b.get(), pcv_b.get(), gX,
               gAT, Gw_b.get(), GTv_b.get(), dots_b.get(), accC + S * LANES);
      T* gWi = g.gW_init + (size_t)b * N * N;
      for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) gWi[i * N + j] = gX[j * NP + i];
      T* gk = g.gk + (size_t)b * SQ;
      T* ga = g.ga + (size_t)b * SQ;
      T* gc = g.gc + (size_t)b * (SMAX + 1);
      for (int i = 0; i < SQ; ++i) {
        gk[i] = hsum(ld(accK + i * LANES));
        ga[i] = hsum(ld(accA + i * LANES));
      }
      for (int i = 0; i <= SMAX; ++i) gc[i] = hsum(ld(accC + i * LANES));
    }
  }

  // One pass over the rows of the state gradient gX (layout of X):
  //  1. if pending: finish gW_t from gW_{t+1} and step t+1's reads (zero it at a tbptt cut);
  //  2. if step t wrote (act): with gW' = gW_t and G = alpha * gW', accumulate gAT += gW' * P^T (P^T as
  //     the recompute stored it), Gw[r] = G w_r, GTv[r] = G^T v_r, and <gW', W_{t-1}> lane-wise into accCS.
  static void row_pass(const Params<T>& p, const Vecs& vec, const T* Xprev, const T* __restrict PT, bool act,
                       bool pending, bool cut, T mult, const T* __restrict pgz, const T* __restrict pcv,
                       T* __restrict gX, T* __restrict gAT, T* __restrict Gw, T* __restrict GTv,
                       T* __restrict dots, T* accCS) {
    const int N = p.N, NP = p.NP, S = SC ? SC : p.S, nv = NVC ? NVC : p.nv;
    const T* __restrict AT = p.AT;
    if (!act) {  // only the pending terms
      if (!pending) return;
      const V vmult = bc(mult);
      for (int j = 0; j < N; ++j) {
        T* gx = gX + j * NP;
        V gr[NVA];
        UNROLL for (int c = 0; c < nv; ++c) gr[c] = cut ? V{} : vmult * ld(gx + c * LANES);
        if (!cut)
          UNROLL for (int s = 0; s < SA; ++s)
            if (s < S) {
              const V cv = bc(pcv[s * NP + j]);
              UNROLL for (int c = 0; c < nv; ++c) gr[c] += cv * ld(pgz + s * NP + c * LANES);
            }
        UNROLL for (int c = 0; c < nv; ++c) st(gx + c * LANES, gr[c]);
      }
      return;
    }
    const T* __restrict wr_[SA];
    const T* __restrict vr_[SA];
    UNROLL for (int r = 0; r < SA; ++r) {
      wr_[r] = vec.W_(r < S ? r : 0);
      vr_[r] = vec.V_(r < S ? r : 0);
    }
    const V vmult = bc(mult);
    const bool fin = pending && !cut, zero = pending && cut;
    V accG[SA][NVA], accC[NVA];
    UNROLL for (int c = 0; c < nv; ++c) accC[c] = V{};
    UNROLL for (int r = 0; r < SA; ++r)
      if (r < S) UNROLL for (int c = 0; c < nv; ++c) accG[r][c] = V{};
    for (int j = 0; j < N; ++j) {
      T* gx = gX + j * NP;
      V gr[NVA];
      if (zero) {
        UNROLL for (int c = 0; c < nv; ++c) gr[c] = V{};
      } else {
        UNROLL for (int c = 0; c < nv; ++c) gr[c] = ld(gx + c * LANES);
        if (fin) {
          UNROLL for (int c = 0; c < nv; ++c) gr[c] *= vmult;
          UNROLL for (int s = 0; s < SA; ++s)
            if (s < S) {
              const V cv = bc(pcv[s * NP + j]);
              UNROLL for (int c = 0; c < nv; ++c) gr[c] += cv * ld(pgz + s * NP + c * LANES);
            }
        }
      }
      if (pending) UNROLL for (int c = 0; c < nv; ++c) st(gx + c * LANES, gr[c]);
      const T* at = AT + j * NP;
      const T* xp = Xprev + j * NP;
      T* ga = gAT + j * NP;
      const T* pt = PT + j * NP;
      V G[NVA];
      UNROLL for (int c = 0; c < nv; ++c) {
        G[c] = ld(at + c * LANES) * gr[c];
        accC[c] += gr[c] * ld(xp + c * LANES);
        st(ga + c * LANES, ld(ga + c * LANES) + gr[c] * ld(pt + c * LANES));
      }
      UNROLL for (int r = 0; r < SA; ++r)
        if (r < S) {
          const V wr = bc(wr_[r][j]);
          V d = V{};
          UNROLL for (int c = 0; c < nv; ++c) {
            accG[r][c] += wr * G[c];
            d += G[c] * ld(vr_[r] + c * LANES);
          }
          st(dots + ((size_t)r * NP + j) * LANES, d);
        }
    }
    V tot = V{};
    UNROLL for (int c = 0; c < nv; ++c) tot += accC[c];
    add_to(accCS, tot);
    for (int r = 0; r < S; ++r) {
      UNROLL for (int c = 0; c < nv; ++c) st(Gw + r * NP + c * LANES, accG[r][c]);
      const T* d = dots + (size_t)r * NP * LANES;
      for (int jb = 0; jb < NP; jb += LANES) {
        V acc[LANES];
        UNROLL for (int jj = 0; jj < LANES; ++jj) acc[jj] = jb + jj < N ? ld(d + (size_t)(jb + jj) * LANES) : V{};
        reduce_level<LANES, 1>(acc);
        st(GTv + r * NP + jb, acc[0]);
      }
    }
  }
};

// ------------------------------------------------------------------------------------------------
// Dispatch to a compiled-in (S, vectors per row) pair, else the generic instantiation.

template <typename T, typename F>
void dispatch(int S, int nv, F&& f) {
  auto by_nv = [&]<int SC>() {
    switch (nv) {
      case 1: f.template operator()<SC, 1>(); return;
      case 2: f.template operator()<SC, 2>(); return;
      case 3: f.template operator()<SC, 3>(); return;
      case 4: f.template operator()<SC, 4>(); return;
      case 8: f.template operator()<SC, 8>(); return;
      default: f.template operator()<SC, 0>(); return;
    }
  };
  if constexpr (sizeof(T) == 4) {
    switch (S) {
      case 1: by_nv.template operator()<1>(); return;
      case 2: by_nv.template operator()<2>(); return;
      case 4: by_nv.template operator()<4>(); return;
      default: by_nv.template operator()<0>(); return;
    }
  } else {  // float64: tests and checks, not speed
    if (nv == 1) f.template operator()<0, 1>();
    else f.template operator()<0, 0>();
  }
}

template <typename T>
struct Prepared {  // padded parameter copies and coefficients for one call
  Params<T> p;
  at::Tensor AT, A, LT, Lm, M2T, M2m, c1, c2;
};

// The MLP write's parameters (M1 [N, N], c1 [N], M2 [N, N], c2 [N]: nn.Linear weights and biases), or none.
struct MLP {
  c10::optional<at::Tensor> M1, c1, M2, c2;
  bool on() const { return M1.has_value() && M1->defined(); }
};

template <typename T>
Prepared<T> prepare(const at::Tensor& alpha, const c10::optional<at::Tensor>& L, const at::Tensor& kappa,
                    const at::Tensor& beta, int N, int sigma, const MLP& mlp) {
  Prepared<T> out;
  Params<T>& p = out.p;
  constexpr int LANES = VBYTES / sizeof(T);
  p.N = N;
  p.nv = (N + LANES - 1) / LANES;
  p.NP = p.nv * LANES;
  p.S = kappa.size(0) - 1;
  p.sigma = sigma;
  p.mlp = mlp.on();
  p.has_L = (L.has_value() && L->defined()) || p.mlp;
  TORCH_CHECK(!(p.mlp && L.has_value() && L->defined()), "MetODS fused kernel: L and an MLP write both given");
  TORCH_CHECK(p.S >= 1 && p.S <= SMAX, "MetODS fused kernel: S must be in 1..", SMAX);
  TORCH_CHECK(p.nv <= NVMAX, "MetODS fused kernel: N too large");
  auto pad = [&](const at::Tensor& m) {
    auto o = at::zeros({N, p.NP}, m.options());
    o.narrow(1, 0, N).copy_(m);
    return o;
  };
  auto a = alpha.contiguous();
  out.A = pad(a);
  out.AT = pad(a.t());
  p.A = out.A.template data_ptr<T>();
  p.AT = out.AT.template data_ptr<T>();
  p.LT = p.Lm = p.M2T = p.M2m = p.c1 = p.c2 = nullptr;
  if (p.mlp) {
    TORCH_CHECK(mlp.c1 && mlp.M2 && mlp.c2, "MetODS fused kernel: the MLP write needs M1, c1, M2 and c2");
    auto vec = [&](const at::Tensor& c) {
      auto o = at::zeros({p.NP}, c.options());
      o.narrow(0, 0, N).copy_(c);
      return o;
    };
    auto m2 = mlp.M2->contiguous();
    out.M2m = pad(m2);
    out.M2T = pad(m2.t());
    out.c1 = vec(*mlp.c1);
    out.c2 = vec(*mlp.c2);
    p.M2m = out.M2m.template data_ptr<T>();
    p.M2T = out.M2T.template data_ptr<T>();
    p.c1 = out.c1.template data_ptr<T>();
    p.c2 = out.c2.template data_ptr<T>();
  }
  if (p.has_L) {
    auto l = (p.mlp ? *mlp.M1 : *L).contiguous();
    out.Lm = pad(l);
    out.LT = pad(l.t());
    p.Lm = out.Lm.template data_ptr<T>();
    p.LT = out.LT.template data_ptr<T>();
  }
  auto kap = kappa.contiguous();
  auto bet = beta.contiguous();
  const T* kp = kap.data_ptr<T>();
  const T* bp = bet.data_ptr<T>();
  const int S = p.S, W = S + 1;
  for (int s = 0; s <= SMAX; ++s)
    for (int l = 0; l <= SMAX; ++l) p.kappa[s][l] = p.a[s][l] = 0;
  for (int s = 0; s <= S; ++s)
    for (int l = 0; l <= S; ++l) p.kappa[s][l] = kp[s * W + l];
  // c_s = sum_{l<s} beta[s,l] c_l;  a_{s,s-1} = beta[s,s];  a_{s,r} = sum_{l=r+1}^{s-1} beta[s,l] a_{l,r}
  p.c[0] = 1;
  for (int s = 1; s <= S; ++s) {
    T c = 0;
    for (int l = 0; l < s; ++l) c += bp[s * W + l] * p.c[l];
    p.c[s] = c;
    for (int r = 0; r < s - 1; ++r) {
      T v = 0;
      for (int l = r + 1; l < s; ++l) v += bp[s * W + l] * p.a[l][r];
      p.a[s][r] = v;
    }
    p.a[s][s - 1] = bp[s * W + s];
  }
  p.nq = S * (S - 1) / 2;
  p.nvecs = 4 * S + 1 + p.nq + (p.mlp ? S : 0);
  return out;
}

std::vector<at::Tensor> trial_forward(const at::Tensor& v0, const at::Tensor& active, const at::Tensor& W_init,
                                      const at::Tensor& alpha, const c10::optional<at::Tensor>& L,
                                      const at::Tensor& kappa, const at::Tensor& beta, int64_t sigma,
                                      int64_t checkpoint, const c10::optional<at::Tensor>& M1,
                                      const c10::optional<at::Tensor>& c1, const c10::optional<at::Tensor>& M2,
                                      const c10::optional<at::Tensor>& c2) {
  TORCH_CHECK(v0.dim() == 3 && active.dim() == 2 && W_init.dim() == 3, "MetODS fused kernel: bad shapes");
  TORCH_CHECK(active.scalar_type() == at::kBool, "MetODS fused kernel: active must be bool");
  const int T_ = v0.size(0), B = v0.size(1), N = v0.size(2);
  auto x = v0.contiguous();
  auto act = active.contiguous();
  auto Wi = W_init.contiguous();
  auto h = at::empty_like(x);
  auto W_T = at::empty_like(Wi);
  at::Tensor ckpt;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "metods_trial_forward", [&] {
    auto prep = prepare<scalar_t>(alpha, L, kappa, beta, N, (int)sigma, MLP{M1, c1, M2, c2});
    const auto& p = prep.p;
    const int k = checkpoint > 0 ? (int)checkpoint : 0;
    if (k) ckpt = at::empty({(T_ + k - 1) / k, B, N, p.NP}, x.options());
    scalar_t* cp = k ? ckpt.data_ptr<scalar_t>() : nullptr;
    dispatch<scalar_t>(p.S, p.nv, [&]<int SC, int NVC>() {
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        Kernel<scalar_t, SC, NVC>::forward(p, T_, B, b0, b1, x.data_ptr<scalar_t>(), act.data_ptr<bool>(),
                                           Wi.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
                                           W_T.data_ptr<scalar_t>(), cp, k ? k : 1);
      });
    });
  });
  if (!ckpt.defined()) ckpt = at::empty({0}, x.options());
  return {h, W_T, ckpt};
}

std::vector<at::Tensor> trial_backward(const at::Tensor& grad_h, const at::Tensor& grad_W_T, const at::Tensor& v0,
                                       const at::Tensor& active, const at::Tensor& ckpt, const at::Tensor& alpha,
                                       const c10::optional<at::Tensor>& L, const at::Tensor& kappa,
                                       const at::Tensor& beta, int64_t sigma, int64_t checkpoint, int64_t tbptt,
                                       const c10::optional<at::Tensor>& M1, const c10::optional<at::Tensor>& c1,
                                       const c10::optional<at::Tensor>& M2, const c10::optional<at::Tensor>& c2) {
  const int T_ = v0.size(0), B = v0.size(1), N = v0.size(2), k = (int)checkpoint;
  TORCH_CHECK(k >= 1 && ckpt.dim() == 4 && ckpt.size(0) == (T_ + k - 1) / k, "MetODS fused kernel: bad checkpoints");
  auto x = v0.contiguous();
  auto act = active.contiguous();
  auto gh = grad_h.contiguous();
  auto gWT = grad_W_T.contiguous();
  auto g_v0 = at::empty_like(x);
  auto g_Wi = at::empty({B, N, N}, x.options());
  at::Tensor g_alpha, g_L, g_kappa, g_beta, g_M1, g_c1, g_M2, g_c2;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "metods_trial_backward", [&] {
    auto prep = prepare<scalar_t>(alpha, L, kappa, beta, N, (int)sigma, MLP{M1, c1, M2, c2});
    const auto& p = prep.p;
    const int S = p.S, NP = p.NP;
    constexpr int SQ = (SMAX + 1) * (SMAX + 1);
    auto gAT = at::zeros({B, N, NP}, x.options());
    auto gL = p.has_L ? at::zeros({B, N, NP}, x.options()) : at::Tensor();
    auto gk = at::zeros({B, SQ}, x.options());
    auto gc = at::zeros({B, SMAX + 1}, x.options());
    auto ga = at::zeros({B, SQ}, x.options());
    auto gM2 = p.mlp ? at::zeros({B, N, NP}, x.options()) : at::Tensor();
    auto gc1 = p.mlp ? at::zeros({B, NP}, x.options()) : at::Tensor();
    auto gc2 = p.mlp ? at::zeros({B, NP}, x.options()) : at::Tensor();
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    typename Kernel<scalar_t, 0, 0>::Grads g{g_v0.data_ptr<scalar_t>(), g_Wi.data_ptr<scalar_t>(), ptr(gAT), ptr(gL),
                                             ptr(gk), ptr(gc), ptr(ga), ptr(gM2), ptr(gc1), ptr(gc2)};
    dispatch<scalar_t>(S, p.nv, [&]<int SC, int NVC>() {
      typedef Kernel<scalar_t, SC, NVC> K;
      typename K::Grads gk_{g.gv0, g.gW_init, g.gAT, g.gL, g.gk, g.gc, g.ga, g.gM2, g.gc1, g.gc2};
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        K::backward(p, T_, B, b0, b1, k, (int)tbptt, x.data_ptr<scalar_t>(), act.data_ptr<bool>(),
                    ckpt.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>(), gWT.data_ptr<scalar_t>(), gk_);
      });
    });
    // Sum the per-environment accumulators in environment order (independent of the thread count).
    auto sum_envs = [&](const at::Tensor& acc) {
      auto out = acc[0].clone();
      for (int b = 1; b < B; ++b) out.add_(acc[b]);
      return out;
    };
    if (B == 0) {
      g_alpha = at::zeros_like(alpha);
      g_kappa = at::zeros_like(kappa);
      g_beta = at::zeros_like(beta);
      if (p.mlp) {
        g_M1 = at::zeros_like(*M1);
        g_c1 = at::zeros_like(*c1);
        g_M2 = at::zeros_like(*M2);
        g_c2 = at::zeros_like(*c2);
      } else if (p.has_L) {
        g_L = at::zeros_like(*L);
      }
      return;
    }
    g_alpha = sum_envs(gAT).narrow(1, 0, N).t().contiguous();
    if (p.mlp) {
      g_M1 = sum_envs(gL).narrow(1, 0, N).contiguous();
      g_M2 = sum_envs(gM2).narrow(1, 0, N).contiguous();
      g_c1 = sum_envs(gc1).narrow(0, 0, N).contiguous();
      g_c2 = sum_envs(gc2).narrow(0, 0, N).contiguous();
    } else if (p.has_L) {
      g_L = sum_envs(gL).narrow(1, 0, N).contiguous();
    }
    auto gk_s = sum_envs(gk);
    auto gc_s = sum_envs(gc);
    auto ga_s = sum_envs(ga);
    const scalar_t* gkp = gk_s.data_ptr<scalar_t>();
    g_kappa = at::zeros({S + 1, S + 1}, x.options());
    scalar_t* gkap = g_kappa.data_ptr<scalar_t>();
    for (int s = 1; s <= S; ++s)
      for (int l = 0; l <= s; ++l) gkap[s * (S + 1) + l] = gkp[s * (SMAX + 1) + l];
    // Back through c and a to beta (the recursions of prepare, reversed).
    std::vector<scalar_t> gcv(S + 1), gav((S + 1) * (S + 1));
    for (int s = 0; s <= S; ++s) gcv[s] = gc_s.data_ptr<scalar_t>()[s];
    for (int s = 0; s <= S; ++s)
      for (int r = 0; r <= S; ++r) gav[s * (S + 1) + r] = ga_s.data_ptr<scalar_t>()[s * (SMAX + 1) + r];
    auto bet = beta.contiguous();
    const scalar_t* bp = bet.data_ptr<scalar_t>();
    g_beta = at::zeros({S + 1, S + 1}, x.options());
    scalar_t* gb = g_beta.data_ptr<scalar_t>();
    const int W = S + 1;
    for (int s = S; s >= 1; --s) {
      gb[s * W + s] += gav[s * W + s - 1];
      for (int r = 0; r < s - 1; ++r) {
        const scalar_t gar = gav[s * W + r];
        for (int l = r + 1; l < s; ++l) {
          gb[s * W + l] += gar * p.a[l][r];
          gav[l * W + r] += gar * bp[s * W + l];
        }
      }
      for (int l = 0; l < s; ++l) {
        gb[s * W + l] += gcv[s] * p.c[l];
        gcv[l] += gcv[s] * bp[s * W + l];
      }
    }
  });
  return {g_v0, g_Wi, g_alpha, g_L, g_kappa, g_beta, g_M1, g_c1, g_M2, g_c2};
}

}  // namespace metods

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &metods::trial_forward, "MetODS trial forward: (h, W_T, checkpoints)");
  m.def("backward", &metods::trial_backward,
        "MetODS trial backward: grads of (v0, W_init, alpha, L, kappa, beta, M1, c1, M2, c2)");
  m.attr("vector_bytes") = metods::VBYTES;
}
