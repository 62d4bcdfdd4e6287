// The pass kernels declared in pair_passes.h, written once against the traits of simd.h.
//
// No include guard on purpose: pair_passes.h includes this file once per instruction set,
// inside `namespace ifm::cpu::simd::<isa>` (which provides V<T>, kTileQ, kTileP, kTile2, kIsa)
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
void pass1_tile(const T* const* xs, const T* ts, const T* const* ys, const T* const* es, int64_t n,
                double* out) {
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

// Pass 2 for Q query rows xs over U vectors of columns from k0 (TAIL: only rem columns):
// accs[q][k] += sum_{idx < cnt} c2[q * ldc + idx] * rho_k + c1[q * ldc + idx] * e_k for pair
// js[idx], rho = (x_q - y) - t_q * e. Accumulated in T over blocks of 64 pairs, each block's sum
// added to the double rows in order.
template <typename T, bool HAS_E, int Q, int U, bool TAIL, typename C>
inline __attribute__((always_inline)) void pass2_block(const T* const* xs,
                                                       const typename V<T>::R* tv, const T* y,
                                                       int64_t ldy, const T* e, int64_t lde,
                                                       const int64_t* js, const C* c1, const C* c2,
                                                       int64_t ldc, int64_t cnt, int64_t k0,
                                                       int64_t rem, double* const* accs) {
  using Vt = V<T>;
  using R = typename Vt::R;
  constexpr int W = Vt::W;
  constexpr int64_t JB = 64;
  int64_t m[U];
  R xv[Q][U];
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) {
    const int64_t left = rem - (int64_t)u * W;
    m[u] = left < 0 ? 0 : (left > W ? W : left);
#pragma GCC unroll 8
    for (int q = 0; q < Q; ++q)
      xv[q][u] = TAIL ? Vt::load_tail(xs[q] + k0 + u * W, m[u]) : Vt::load(xs[q] + k0 + u * W);
  }
  for (int64_t b0 = 0; b0 < cnt; b0 += JB) {
    const int64_t b1 = b0 + JB < cnt ? b0 + JB : cnt;
    R acc[Q][U];
#pragma GCC unroll 8
    for (int q = 0; q < Q; ++q)
#pragma GCC unroll 8
      for (int u = 0; u < U; ++u) acc[q][u] = Vt::zero();
    for (int64_t idx = b0; idx < b1; ++idx) {
      const T* yj = y + js[idx] * ldy + k0;
      const T* ej = HAS_E ? e + js[idx] * lde + k0 : nullptr;
      R yv[U], ev[U];
#pragma GCC unroll 8
      for (int u = 0; u < U; ++u) {
        yv[u] = TAIL ? Vt::load_tail(yj + u * W, m[u]) : Vt::load(yj + u * W);
        ev[u] = Vt::zero();
        if (HAS_E) ev[u] = TAIL ? Vt::load_tail(ej + u * W, m[u]) : Vt::load(ej + u * W);
      }
#pragma GCC unroll 8
      for (int q = 0; q < Q; ++q) {
        const R w2 = Vt::set1((T)c2[q * ldc + idx]);
        const R w1 = Vt::set1(HAS_E ? (T)c1[q * ldc + idx] : T(0));
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) {
          R d = Vt::sub(xv[q][u], yv[u]);
          if (HAS_E) d = Vt::fnmadd(tv[q], ev[u], d);
          acc[q][u] = Vt::fmadd(w2, d, acc[q][u]);
          if (HAS_E) acc[q][u] = Vt::fmadd(w1, ev[u], acc[q][u]);
        }
      }
    }
    for (int q = 0; q < Q; ++q)
      for (int u = 0; u < U; ++u) {
        T tmp[W];
        Vt::store(tmp, acc[q][u]);
        double* dst = accs[q] + k0 + u * W;
        if (TAIL) {
          for (int64_t l = 0; l < m[u]; ++l) dst[l] += (double)tmp[l];
        } else {
#pragma omp simd
          for (int l = 0; l < W; ++l) dst[l] += (double)tmp[l];
        }
      }
  }
}

// One query row against its own pair list (4 vectors of columns at a time).
template <typename T, bool HAS_E>
void pass2_rows(const T* x, double t, const T* y, int64_t ldy, const T* e, int64_t lde,
                const int64_t* js, const double* c1, const double* c2, int64_t cnt, int64_t n,
                double* acc) {
  using Vt = V<T>;
  constexpr int U = 4;
  constexpr int64_t CH = U * Vt::W;
  const typename Vt::R tv[1] = {Vt::set1((T)t)};
  const T* xs[1] = {x};
  double* accs[1] = {acc};
  int64_t k0 = 0;
  for (; k0 + CH <= n; k0 += CH)
    pass2_block<T, HAS_E, 1, U, false>(xs, tv, y, ldy, e, lde, js, c1, c2, 0, cnt, k0, CH, accs);
  if (k0 < n)
    pass2_block<T, HAS_E, 1, U, true>(xs, tv, y, ldy, e, lde, js, c1, c2, 0, cnt, k0, n - k0, accs);
}

// kTile2 query rows sharing every load of a pair row (one vector of columns at a time).
template <typename T, bool HAS_E>
void pass2_tile(const T* const* xs, const T* ts, const T* y, int64_t ldy, const T* e, int64_t lde,
                const int64_t* js, int64_t m, const T* c1, const T* c2, int64_t n,
                double* const* accs) {
  using Vt = V<T>;
  constexpr int W = Vt::W;
  typename Vt::R tv[kTile2];
#pragma GCC unroll 8
  for (int q = 0; q < kTile2; ++q) tv[q] = Vt::set1(HAS_E ? ts[q] : T(0));
  int64_t k = 0;
  for (; k + W <= n; k += W)
    pass2_block<T, HAS_E, kTile2, 1, false>(xs, tv, y, ldy, e, lde, js, c1, c2, m, m, k, W, accs);
  if (k < n)
    pass2_block<T, HAS_E, kTile2, 1, true>(xs, tv, y, ldy, e, lde, js, c1, c2, m, m, k, n - k,
                                           accs);
}

template <bool HAS_E>
void pass1_soa(const double* x, double t, const double* yT, const double* eT, int64_t n, int64_t Bp,
               double* r2) {
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
PassKernels<T> make_kernels() {
  PassKernels<T> k;
  k.isa = kIsa;
  k.QI = kTileQ;
  k.PJ = kTileP;
  k.W = V<T>::W;
  k.WD = V<double>::W;
  k.pass1_tile[0] = &pass1_tile<T, false>;
  k.pass1_tile[1] = &pass1_tile<T, true>;
  k.pass2_rows[0] = &pass2_rows<T, false>;
  k.pass2_rows[1] = &pass2_rows<T, true>;
  k.Q2 = kTile2;
  k.pass2_tile[0] = &pass2_tile<T, false>;
  k.pass2_tile[1] = &pass2_tile<T, true>;
  k.pass1_soa[0] = &pass1_soa<false>;
  k.pass1_soa[1] = &pass1_soa<true>;
  k.pass2_soa[0] = &pass2_soa<false>;
  k.pass2_soa[1] = &pass2_soa<true>;
  k.coulomb_logits = &coulomb_logits;
  k.exp_shift = &exp_shift;
  return k;
}
