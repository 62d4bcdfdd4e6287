// Unit test of the fused CPU kernels (csrc/cpu/) against naive double-precision loops written
// from FIELDS.md §2-§4: small odd shapes, both plates and one plate, stable and normalised
// modes, float and double, every instruction set this CPU has (IFM_CPU_ISA), z at the edges
// of every region, and bitwise-identical results for 1, 2 and 3 threads.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/simd.h"
#include "field_math.h"

namespace {

int failures = 0, checks = 0;

void fail(const std::string& what) {
  if (failures < 40) std::printf("FAIL %s\n", what.c_str());
  ++failures;
}

// ---------------------------------------------------------------- naive double references
struct Geometry {
  const char* name;
  double L, sigma0, K;
};

std::vector<double> naive_string(const std::vector<double>& P, const std::vector<double>& Q,
                                 const std::vector<double>& A, int64_t b, int64_t B, int64_t D,
                                 const ifm::StringParams& p, bool stable,
                                 const ifm::NormParams& norm) {
  const int64_t DIM = D + 1;
  std::vector<double> E(b * DIM, 0.0);
  std::vector<double> logw(B), cosa(B), sr(B), r2(B);
  for (int64_t i = 0; i < b; ++i) {
    const double z = P[i * DIM];
    const ifm::StringQuery q = ifm::string_query(z, p);
    const double tau = z / p.L;
    double m = -INFINITY;
    for (int64_t j = 0; j < B; ++j) {
      double s = 0.0;
      for (int64_t k = 1; k <= D; ++k) {
        const double rho =
            (P[i * DIM + k] - Q[j * DIM + k]) - tau * (A[j * DIM + k] - Q[j * DIM + k]);
        s += rho * rho;
      }
      r2[j] = s;
      const ifm::StringPair pr = ifm::string_pair(q, s);
      logw[j] = pr.logw;
      cosa[j] = pr.cos_a;
      sr[j] = pr.sr;
      m = std::fmax(m, pr.logw);
    }
    if (!std::isfinite(m)) m = 0.0;
    for (int64_t j = 0; j < B; ++j) {
      const double w = std::exp(stable ? logw[j] - m : logw[j]);
      if (w == 0.0) continue;
      double n2 = p.L * p.L;
      for (int64_t k = 1; k <= D; ++k) {
        const double dl = A[j * DIM + k] - Q[j * DIM + k];
        n2 += dl * dl;
      }
      const double nrm = std::sqrt(n2);
      E[i * DIM] += w * cosa[j] * p.L / nrm;
      for (int64_t k = 1; k <= D; ++k) {
        const double dl = A[j * DIM + k] - Q[j * DIM + k];
        const double rho = (P[i * DIM + k] - Q[j * DIM + k]) - tau * dl;
        E[i * DIM + k] += w * (cosa[j] * dl / nrm + sr[j] * rho);
      }
    }
  }
  if (norm.normalize)
    for (int64_t i = 0; i < b; ++i) {
      double s = 0.0;
      for (int64_t k = 0; k < DIM; ++k) s += E[i * DIM + k] * E[i * DIM + k];
      const double f = norm.scale / (std::sqrt(s) + norm.eps);
      for (int64_t k = 0; k < DIM; ++k) E[i * DIM + k] *= f;
    }
  return E;
}

std::vector<double> naive_plate(const std::vector<double>& P, const std::vector<double>& Y,
                                int64_t b, int64_t B, int64_t DIM, double sum_eps) {
  std::vector<double> E(b * DIM, 0.0), lg(B);
  for (int64_t i = 0; i < b; ++i) {
    double m = -INFINITY;
    for (int64_t j = 0; j < B; ++j) {
      double s = 0.0;
      for (int64_t k = 0; k < DIM; ++k) {
        const double d = P[i * DIM + k] - Y[j * DIM + k];
        s += d * d;
      }
      lg[j] = ifm::coulomb_logit(s, DIM);
      m = std::fmax(m, lg[j]);
    }
    double sum = 0.0;
    for (int64_t j = 0; j < B; ++j) sum += std::exp(lg[j] - m);
    for (int64_t j = 0; j < B; ++j) {
      const double c = std::exp(lg[j] - m) / (sum + sum_eps);
      for (int64_t k = 0; k < DIM; ++k) E[i * DIM + k] += c * (Y[j * DIM + k] - P[i * DIM + k]);
    }
  }
  return E;
}

void normalize_rows(std::vector<double>& E, int64_t b, int64_t DIM, double scale, double eps) {
  for (int64_t i = 0; i < b; ++i) {
    double s = 0.0;
    for (int64_t k = 0; k < DIM; ++k) s += E[i * DIM + k] * E[i * DIM + k];
    const double f = scale / (std::sqrt(s) + eps);
    for (int64_t k = 0; k < DIM; ++k) E[i * DIM + k] *= f;
  }
}

std::vector<double> naive_coulomb(const std::vector<double>& P, const std::vector<double>& Yp,
                                  const std::vector<double>* Yn, int64_t b, int64_t Bp, int64_t Bn,
                                  int64_t D, bool plate_norm, double gamma, double sum_eps,
                                  const ifm::NormParams& norm) {
  const int64_t DIM = D + 1;
  std::vector<double> Ep = naive_plate(P, Yp, b, Bp, DIM, sum_eps);
  if (plate_norm) normalize_rows(Ep, b, DIM, std::sqrt((double)DIM), gamma);
  std::vector<double> E = Ep;
  if (Yn) {
    std::vector<double> En = naive_plate(P, *Yn, b, Bn, DIM, sum_eps);
    if (plate_norm) normalize_rows(En, b, DIM, std::sqrt((double)DIM), gamma);
    for (size_t k = 0; k < E.size(); ++k) E[k] = En[k] - Ep[k];
  }
  if (norm.normalize) normalize_rows(E, b, DIM, norm.scale, norm.eps);
  return E;
}

// ---------------------------------------------------------------- comparison
template <typename T>
void compare(const std::string& what, const std::vector<T>& got, const std::vector<double>& want,
             int64_t b, int64_t DIM, double rtol) {
  ++checks;
  for (int64_t i = 0; i < b; ++i) {
    double e2 = 0.0, w2 = 0.0, g2 = 0.0;
    bool finite = true;
    for (int64_t k = 0; k < DIM; ++k) {
      const double g = (double)got[i * DIM + k], w = want[i * DIM + k];
      finite = finite && std::isfinite(g);
      e2 += (g - w) * (g - w);
      w2 += w * w;
      g2 += g * g;
    }
    char buf[256];
    if (!finite) {
      std::snprintf(buf, sizeof buf, "%s row %lld: non-finite", what.c_str(), (long long)i);
      fail(buf);
    } else if (std::sqrt(w2) < 1e-30) {
      if (std::sqrt(g2) > 1e-6) {
        std::snprintf(buf, sizeof buf, "%s row %lld: norm %g, want ~0", what.c_str(), (long long)i,
                      std::sqrt(g2));
        fail(buf);
      }
    } else if (std::sqrt(e2 / w2) > rtol) {
      std::snprintf(buf, sizeof buf, "%s row %lld: rel err %g > %g", what.c_str(), (long long)i,
                    std::sqrt(e2 / w2), rtol);
      fail(buf);
    }
  }
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}
template <typename T>
std::vector<double> widen(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// ---------------------------------------------------------------- cases
struct Rng {
  std::mt19937_64 g;
  std::normal_distribution<double> nd{0.0, 1.0};
  std::uniform_real_distribution<double> ud{0.0, 1.0};
  explicit Rng(unsigned seed) : g(seed) {}
  double normal() { return nd(g); }
  double uniform() { return ud(g); }
};

struct StringCase {
  std::vector<double> P, Q, A;  // points, quarks, antiquarks (z-first)
};

StringCase make_string_case(int64_t b, int64_t B, int64_t D, const Geometry& g, unsigned seed) {
  Rng rng(seed);
  const int64_t DIM = D + 1;
  StringCase c;
  c.Q.assign(B * DIM, 0.0);
  c.A.assign(B * DIM, g.L);
  for (int64_t j = 0; j < B; ++j)
    for (int64_t k = 1; k <= D; ++k) {
      c.Q[j * DIM + k] = rng.normal();
      c.A[j * DIM + k] = rng.normal() + 0.5;
    }
  const double d = std::acos(-1.0) / (2.0 * g.K);
  const double special[] = {0.0,        1e-3, d,    g.L / 2,   g.L - d,
                            g.L - 1e-3, g.L,  -0.5, g.L + 0.5, 2 * d};
  c.P.assign(b * DIM, 0.0);
  for (int64_t i = 0; i < b; ++i) {
    const double z = i < 10 ? special[i] : rng.uniform() * g.L;
    const int64_t j = i % B;
    const double tau = z / g.L;
    // near the pair's segment, within a fraction of the tube width (some rows exactly on it)
    const double spread =
        (i % 3 == 0) ? 0.0 : 0.3 * g.sigma0 * rng.uniform() / std::sqrt((double)D);
    c.P[i * DIM] = z;
    for (int64_t k = 1; k <= D; ++k)
      c.P[i * DIM + k] =
          (1 - tau) * c.Q[j * DIM + k] + tau * c.A[j * DIM + k] + spread * rng.normal();
  }
  return c;
}

template <typename T>
void run_string(const Geometry& g, int64_t b, int64_t B, int64_t D, bool stable, bool normalize,
                const char* isa) {
  const StringCase c = make_string_case(b, B, D, g, (unsigned)(b * 131 + B * 17 + D));
  // inputs rounded to T, reference evaluated on the rounded values
  const std::vector<T> P = cast<T>(c.P), Q = cast<T>(c.Q), A = cast<T>(c.A);
  const ifm::StringParams p{g.L, g.sigma0, g.K, std::acos(-1.0) / (2.0 * g.K), D};
  ifm::NormParams norm;
  norm.normalize = normalize;
  norm.scale = std::sqrt((double)(D + 1));
  const std::vector<double> want =
      naive_string(widen(P), widen(Q), widen(A), b, B, D, p, stable, norm);
  std::vector<T> got(b * (D + 1));
  ifm::cpu::string_field<T>(P.data(), Q.data(), A.data(), b, B, p, stable, norm, got.data(), 2);
  char what[200];
  std::snprintf(what, sizeof what, "string[%s %s %s b=%lld B=%lld D=%lld stable=%d norm=%d]", isa,
                sizeof(T) == 4 ? "f32" : "f64", g.name, (long long)b, (long long)B, (long long)D,
                stable, normalize);
  compare(what, got, want, b, D + 1, sizeof(T) == 4 ? 2e-4 : 1e-10);
}

struct CoulombCase {
  std::vector<double> P, Yp, Yn;
};

CoulombCase make_coulomb_case(int64_t b, int64_t Bp, int64_t Bn, int64_t D, double L,
                              unsigned seed) {
  Rng rng(seed);
  const int64_t DIM = D + 1;
  CoulombCase c;
  c.Yp.assign(Bp * DIM, 0.0);
  c.Yn.assign(Bn * DIM, L);
  for (int64_t j = 0; j < Bp; ++j)
    for (int64_t k = 1; k < DIM; ++k) c.Yp[j * DIM + k] = rng.normal();
  for (int64_t j = 0; j < Bn; ++j)
    for (int64_t k = 1; k < DIM; ++k) c.Yn[j * DIM + k] = rng.normal() + 1.0;
  c.P.assign(b * DIM, 0.0);
  for (int64_t i = 0; i < b; ++i) {
    c.P[i * DIM] = rng.uniform() * (L + 2) - 1;
    for (int64_t k = 1; k < DIM; ++k) c.P[i * DIM + k] = 1.5 * rng.normal();
  }
  if (b > 1)  // a query exactly on a charge
    for (int64_t k = 0; k < DIM; ++k) c.P[1 * DIM + k] = c.Yp[k];
  if (b > 2 && Bn > 0)  // one within 1e-7 of a charge
    for (int64_t k = 0; k < DIM; ++k) c.P[2 * DIM + k] = c.Yn[(Bn - 1) * DIM + k] + 1e-7;
  return c;
}

template <typename T>
void run_coulomb(int64_t b, int64_t Bp, int64_t Bn, int64_t D, bool two, bool plate_norm,
                 double sum_eps, bool normalize, const char* isa) {
  const CoulombCase c = make_coulomb_case(b, Bp, Bn, D, 6.0, (unsigned)(b * 7 + Bp * 3 + D));
  const std::vector<T> P = cast<T>(c.P), Yp = cast<T>(c.Yp), Yn = cast<T>(c.Yn);
  ifm::NormParams norm;
  norm.normalize = normalize;
  norm.scale = std::sqrt((double)(D + 1));
  const double gamma = 5.0;
  const std::vector<double> Ynd = widen(Yn);
  const std::vector<double> want = naive_coulomb(widen(P), widen(Yp), two ? &Ynd : nullptr, b, Bp,
                                                 Bn, D, plate_norm, gamma, sum_eps, norm);
  std::vector<T> got(b * (D + 1));
  ifm::cpu::coulomb_field<T>(P.data(), b, Yp.data(), Bp, two ? Yn.data() : nullptr, two ? Bn : 0, D,
                             plate_norm, gamma, sum_eps, norm, got.data(), 2);
  char what[220];
  std::snprintf(what, sizeof what,
                "coulomb[%s %s b=%lld Bp=%lld Bn=%lld D=%lld two=%d plate=%d eps=%g norm=%d]", isa,
                sizeof(T) == 4 ? "f32" : "f64", (long long)b, (long long)Bp, (long long)Bn,
                (long long)D, two, plate_norm, sum_eps, normalize);
  compare(what, got, want, b, D + 1, sizeof(T) == 4 ? 2e-4 : 1e-10);
}

// Results must not depend on the thread count.
template <typename T>
void run_threads(int64_t b, int64_t B, int64_t D, const char* isa) {
  const Geometry g{"w2s", 20.0, 10.0, std::acos(-1.0) / 20.0};
  const StringCase c = make_string_case(b, B, D, g, 99);
  const std::vector<T> P = cast<T>(c.P), Q = cast<T>(c.Q), A = cast<T>(c.A);
  const ifm::StringParams p{g.L, g.sigma0, g.K, 10.0, D};
  ifm::NormParams norm;
  std::vector<T> s1(b * (D + 1)), s2(s1.size()), s3(s1.size());
  ifm::cpu::string_field<T>(P.data(), Q.data(), A.data(), b, B, p, false, norm, s1.data(), 1);
  ifm::cpu::string_field<T>(P.data(), Q.data(), A.data(), b, B, p, false, norm, s2.data(), 2);
  ifm::cpu::string_field<T>(P.data(), Q.data(), A.data(), b, B, p, false, norm, s3.data(), 3);
  char what[160];
  std::snprintf(what, sizeof what, "threads string[%s %s b=%lld B=%lld D=%lld]", isa,
                sizeof(T) == 4 ? "f32" : "f64", (long long)b, (long long)B, (long long)D);
  ++checks;
  if (std::memcmp(s1.data(), s2.data(), s1.size() * sizeof(T)) != 0 ||
      std::memcmp(s1.data(), s3.data(), s1.size() * sizeof(T)) != 0)
    fail(what);

  const CoulombCase cc = make_coulomb_case(b, B, B + 3, D, 6.0, 5);
  const std::vector<T> Pc = cast<T>(cc.P), Yp = cast<T>(cc.Yp), Yn = cast<T>(cc.Yn);
  std::vector<T> c1(b * (D + 1)), c2(c1.size());
  ifm::cpu::coulomb_field<T>(Pc.data(), b, Yp.data(), B, Yn.data(), B + 3, D, true, 5.0, 0.0, norm,
                             c1.data(), 1);
  ifm::cpu::coulomb_field<T>(Pc.data(), b, Yp.data(), B, Yn.data(), B + 3, D, true, 5.0, 0.0, norm,
                             c2.data(), 2);
  std::snprintf(what, sizeof what, "threads coulomb[%s %s b=%lld B=%lld D=%lld]", isa,
                sizeof(T) == 4 ? "f32" : "f64", (long long)b, (long long)B, (long long)D);
  ++checks;
  if (std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(T)) != 0) fail(what);
}

// The kernels reuse string_pair(q, 0).logw on the straight part of the tube (kappa == 0):
// logw(r2) must equal (-r2 * inv_2s2) + logw(0) bitwise there, with cos_a = 1 and sr = 0.
void check_straight_shortcut() {
  const ifm::StringParams toy{6.0, 1.0, 10.0, std::acos(-1.0) / 20.0, 2};
  for (double z : {0.5, 1.0, 3.0, 5.5}) {
    const ifm::StringQuery q = ifm::string_query(z, toy);
    const double base = ifm::string_pair(q, 0.0).logw;
    for (double r2 : {0.0, 1e-12, 0.37, 3.0, 55.0, 1e4}) {
      const ifm::StringPair pr = ifm::string_pair(q, r2);
      ++checks;
      if (q.kappa != 0.0 || pr.logw != (-r2 * q.inv_2s2) + base || pr.cos_a != 1.0 || pr.sr != 0.0)
        fail("straight-part shortcut of string_pair");
    }
  }
}

template <typename T>
void run_all(const char* isa) {
  const double pi = std::acos(-1.0);
  const Geometry geoms[] = {
      {"toy", 6.0, 1.0, 10.0}, {"cifar", 20.0, 1.0, pi / 20.0}, {"cmnist", 40.0, 10.0, 5.0}};
  const int64_t sizes[] = {1, 5, 37};
  for (const Geometry& g : geoms)
    for (int64_t b : sizes)
      for (int64_t B : sizes)
        for (int64_t D : sizes)
          for (int mode = 0; mode < 4; ++mode) run_string<T>(g, b, B, D, mode & 1, mode & 2, isa);
  // more shapes: the small-D / row-major boundary, k chunks and tails, larger B
  for (int64_t D : {2, 16, 17, 300, 1100})
    for (int mode = 0; mode < 4; ++mode)
      run_string<T>(geoms[mode % 3], 13, 41, D, mode & 1, mode & 2, isa);
  for (int64_t b : sizes)
    for (int64_t B : sizes)
      for (int64_t D : sizes)
        for (int mode = 0; mode < 8; ++mode) {
          const bool two = mode & 1, plate = mode & 2;
          const double sum_eps = (mode & 4) ? 1e-7 : 0.0;
          run_coulomb<T>(b, B, B == 5 ? 3 : B, D, two, plate, sum_eps, (mode & 4) != 0, isa);
        }
  for (int64_t D : {2, 15, 16, 300, 1100}) {
    run_coulomb<T>(13, 41, 29, D, true, true, 0.0, true, isa);
    run_coulomb<T>(13, 41, 0, D, false, false, 1e-7, false, isa);
  }
  // large enough for the kernels to use 2-3 threads (tiny calls stay on one thread)
  run_threads<T>(301, 997, 2, isa);
  run_threads<T>(67, 301, 37, isa);
  run_threads<T>(37, 41, 1100, isa);
}

}  // namespace

int main() {
  check_straight_shortcut();
  using ifm::cpu::simd::Isa;
  const Isa best = ifm::cpu::simd::active_isa();
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    if (isa > best) continue;
    setenv("IFM_CPU_ISA", ifm::cpu::simd::isa_name(isa), 1);
    const char* name = ifm::cpu::simd::isa_name(isa);
    const int before = failures;
    run_all<float>(name);
    run_all<double>(name);
    std::printf("%-7s %s\n", name, failures == before ? "ok" : "FAILED");
  }
  unsetenv("IFM_CPU_ISA");
  std::printf("test_cpu_kernels: %d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
