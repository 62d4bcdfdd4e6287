// Kernels of distance_tiles.h, written once against the traits of simd.h.
//
// No include guard on purpose: distance_tiles.h includes this file once per instruction set,
// inside `namespace ifm::cpu::simd::<isa>` (which provides V<T>, VD<T>, kTileQ, kTileP, kIsa)
// and inside that set's `#pragma GCC target` region, so every function here is compiled for it.

template <typename T, bool HAS_E, bool TAIL>
inline __attribute__((always_inline)) void pass1_step(const T* const* xs,
                                                      const typename V<T>::R* tv,
                                                      const T* const* ys, const T* const* es,
                                                      int64_t k, int64_t m,
                                                      typename V<T>::R (&acc)[kTileQ][kTileP]) {
  using Vt = V<T>;
  using R = typename Vt::R;
  R xv[kTileQ];
#pragma GCC unroll 8
  for (int q = 0; q < kTileQ; ++q) xv[q] = TAIL ? Vt::load_tail(xs[q] + k, m) : Vt::load(xs[q] + k);
#pragma GCC unroll 8
  for (int p = 0; p < kTileP; ++p) {
    const R yv = TAIL ? Vt::load_tail(ys[p] + k, m) : Vt::load(ys[p] + k);
    R ev = Vt::zero();
    if (HAS_E) ev = TAIL ? Vt::load_tail(es[p] + k, m) : Vt::load(es[p] + k);
#pragma GCC unroll 8
    for (int q = 0; q < kTileQ; ++q) {
      R d = Vt::sub(xv[q], yv);
      if (HAS_E) d = Vt::fnmadd(tv[q], ev, d);
      acc[q][p] = Vt::fmadd(d, d, acc[q][p]);
    }
  }
}

template <typename T, bool HAS_E>
void pass1_tile(const T* const* xs, const T* ts, const T* const* ys, const T* const* es,
                int64_t n, double* out) {
  using Vt = V<T>;
  using R = typename Vt::R;
  constexpr int W = Vt::W;
  R acc[kTileQ][kTileP];
  R tv[kTileQ];
#pragma GCC unroll 8
  for (int q = 0; q < kTileQ; ++q) {
    tv[q] = Vt::set1(HAS_E ? ts[q] : T(0));
#pragma GCC unroll 8
    for (int p = 0; p < kTileP; ++p) acc[q][p] = Vt::zero();
  }
  int64_t k = 0;
  for (; k + W <= n; k += W) pass1_step<T, HAS_E, false>(xs, tv, ys, es, k, W, acc);
  if (k < n) pass1_step<T, HAS_E, true>(xs, tv, ys, es, k, n - k, acc);
  for (int q = 0; q < kTileQ; ++q)
    for (int p = 0; p < kTileP; ++p) out[q * kTileP + p] = (double)Vt::hsum(acc[q][p]);
}

// One chunk of U double vectors of pass2_rows, starting at column k0 (TAIL: only rem columns).
template <typename T, bool HAS_E, bool TAIL>
inline __attribute__((always_inline)) void pass2_rows_chunk(
    const T* x, typename VD<T>::R tv, const T* y, int64_t ldy, const T* e, int64_t lde,
    const int64_t* js, const double* c1, const double* c2, int64_t cnt, int64_t k0, int64_t rem,
    double* acc) {
  using Vd = VD<T>;
  using R = typename Vd::R;
  constexpr int W = Vd::W, U = 4;
  int64_t m[U];
  R xv[U], a[U];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
    const int64_t left = rem - (int64_t)u * W;
    m[u] = left < 0 ? 0 : (left > W ? W : left);
    xv[u] = TAIL ? Vd::loadT_tail(x + k0 + u * W, m[u]) : Vd::loadT(x + k0 + u * W);
    a[u] = Vd::zero();
  }
  for (int64_t idx = 0; idx < cnt; ++idx) {
    const T* yj = y + js[idx] * ldy + k0;
    const T* ej = HAS_E ? e + js[idx] * lde + k0 : nullptr;
    const R w2 = Vd::set1(c2[idx]);
    const R w1 = Vd::set1(HAS_E ? c1[idx] : 0.0);
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const R yv = TAIL ? Vd::loadT_tail(yj + u * W, m[u]) : Vd::loadT(yj + u * W);
      R d = Vd::sub(xv[u], yv);
      if (HAS_E) {
        const R ev = TAIL ? Vd::loadT_tail(ej + u * W, m[u]) : Vd::loadT(ej + u * W);
        d = Vd::fnmadd(tv, ev, d);
        a[u] = Vd::fmadd(w2, d, a[u]);
        a[u] = Vd::fmadd(w1, ev, a[u]);
      } else {
        a[u] = Vd::fmadd(w2, d, a[u]);
      }
    }
  }
  for (int u = 0; u < U; ++u) {
    if (!TAIL) {
      Vd::store(acc + k0 + u * W, a[u]);
    } else if (m[u] > 0) {
      double tmp[W];
      Vd::store(tmp, a[u]);
      for (int64_t l = 0; l < m[u]; ++l) acc[k0 + u * W + l] = tmp[l];
    }
  }
}

template <typename T, bool HAS_E>
void pass2_rows(const T* x, double t, const T* y, int64_t ldy, const T* e, int64_t lde,
                const int64_t* js, const double* c1, const double* c2, int64_t cnt, int64_t n,
                double* acc) {
  using Vd = VD<T>;
  constexpr int64_t CH = 4 * Vd::W;
  const typename Vd::R tv = Vd::set1(t);
  int64_t k0 = 0;
  for (; k0 + CH <= n; k0 += CH)
    pass2_rows_chunk<T, HAS_E, false>(x, tv, y, ldy, e, lde, js, c1, c2, cnt, k0, CH, acc);
  if (k0 < n)
    pass2_rows_chunk<T, HAS_E, true>(x, tv, y, ldy, e, lde, js, c1, c2, cnt, k0, n - k0, acc);
}

template <bool HAS_E>
void pass1_soa(const double* x, double t, const double* yT, const double* eT, int64_t n,
               int64_t Bp, double* r2) {
  using Vd = V<double>;
  using R = Vd::R;
  constexpr int W = Vd::W, U = 4;
  const R tv = Vd::set1(t);
  for (int64_t j0 = 0; j0 < Bp; j0 += U * W) {
    R a[U];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) a[u] = Vd::zero();
    for (int64_t k = 0; k < n; ++k) {
      const R xk = Vd::set1(x[k]);
      const double* yk = yT + k * Bp + j0;
      const double* ek = HAS_E ? eT + k * Bp + j0 : nullptr;
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) {
        R d = Vd::sub(xk, Vd::load(yk + u * W));
        if (HAS_E) d = Vd::fnmadd(tv, Vd::load(ek + u * W), d);
        a[u] = Vd::fmadd(d, d, a[u]);
      }
    }
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) Vd::store(r2 + j0 + u * W, a[u]);
  }
}

template <bool HAS_E>
void pass2_soa(const double* x, double t, const double* yT, const double* eT, const double* c1,
               const double* c2, int64_t n, int64_t Bp, double* acc, double* sum_c1) {
  using Vd = V<double>;
  using R = Vd::R;
  constexpr int W = Vd::W, U = 4;
  const R tv = Vd::set1(t);
  for (int64_t k = 0; k < n; ++k) {
    R a[U];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) a[u] = Vd::zero();
    const R xk = Vd::set1(x[k]);
    const double* yk = yT + k * Bp;
    const double* ek = HAS_E ? eT + k * Bp : nullptr;
    for (int64_t j0 = 0; j0 < Bp; j0 += U * W) {
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) {
        const int64_t j = j0 + u * W;
        R d = Vd::sub(xk, Vd::load(yk + j));
        if (HAS_E) {
          const R ev = Vd::load(ek + j);
          d = Vd::fnmadd(tv, ev, d);
          a[u] = Vd::fmadd(Vd::load(c2 + j), d, a[u]);
          a[u] = Vd::fmadd(Vd::load(c1 + j), ev, a[u]);
        } else {
          a[u] = Vd::fmadd(Vd::load(c2 + j), d, a[u]);
        }
      }
    }
    acc[k] = Vd::hsum(Vd::add(Vd::add(a[0], a[1]), Vd::add(a[2], a[3])));
  }
  R s[U];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) s[u] = Vd::zero();
  if (HAS_E) {
    for (int64_t j0 = 0; j0 < Bp; j0 += U * W)
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) s[u] = Vd::add(s[u], Vd::load(c1 + j0 + u * W));
  }
  *sum_c1 = Vd::hsum(Vd::add(Vd::add(s[0], s[1]), Vd::add(s[2], s[3])));
}

inline void coulomb_logits(const double* d2, int64_t n, int64_t dim, double* out) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) out[c] = ::ifm::coulomb_logit(d2[c], dim);
}

inline void exp_shift(const double* a, int64_t n, double shift, double* out) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) out[c] = std::exp(a[c] - shift);
}

template <typename T>
DistanceKernels<T> make_kernels() {
  DistanceKernels<T> k;
  k.isa = kIsa;
  k.QI = kTileQ;
  k.PJ = kTileP;
  k.W = V<T>::W;
  k.WD = V<double>::W;
  k.pass1_tile[0] = &pass1_tile<T, false>;
  k.pass1_tile[1] = &pass1_tile<T, true>;
  k.pass2_rows[0] = &pass2_rows<T, false>;
  k.pass2_rows[1] = &pass2_rows<T, true>;
  k.pass1_soa[0] = &pass1_soa<false>;
  k.pass1_soa[1] = &pass1_soa<true>;
  k.pass2_soa[0] = &pass2_soa<false>;
  k.pass2_soa[1] = &pass2_soa<true>;
  k.coulomb_logits = &coulomb_logits;
  k.exp_shift = &exp_shift;
  return k;
}
