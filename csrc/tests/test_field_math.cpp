// Unit tests of the shared per-pair math (csrc/field_math.h) against values worked out by hand
// from FIELDS.md §2-§4.
#include <cmath>
#include <cstdio>
#include <initializer_list>

#include "field_math.h"

static int failures = 0;

static void expect_near(const char* what, double got, double want, double rtol = 1e-12) {
  const bool ok = (std::isinf(want) && got == want) ||
                  std::fabs(got - want) <= rtol * std::fmax(1.0, std::fabs(want));
  if (!ok) {
    std::printf("FAIL %s: got %.17g, want %.17g\n", what, got, want);
    ++failures;
  }
}

static void expect_true(const char* what, bool cond) {
  if (!cond) {
    std::printf("FAIL %s\n", what);
    ++failures;
  }
}

int main() {
  const double pi = std::acos(-1.0);
  // CIFAR-like geometry: L = 20, K = pi / 20, d = 10 = L / 2 (no straight middle).
  const ifm::StringParams wide{20.0, 1.0, pi / 20.0, 10.0, 3072};
  // Toy geometry: L = 6, K = 10, d = pi / 20 (straight middle).
  const ifm::StringParams toy{6.0, 2.0, 10.0, pi / 20.0, 2};

  // The log of the skip ratio, written without log, is the double log gives.
  for (const bool is_double : {false, true}) {
    expect_true("log_skip_ratio",
                ifm::log_skip_ratio(is_double) == std::log(ifm::skip_ratio(is_double)));
  }

  // Tube width and slope in the three regions.
  {
    const auto q = ifm::string_query(0.05, toy);  // left end
    expect_near("left s", q.s, 2.0 * std::sin(10.0 * 0.05));
    expect_near("left kappa", q.kappa, 10.0 / (std::tan(0.5) + 1e-5));
    expect_true("left offsets from quark", !q.from_antiquark);
    expect_near("left t", q.t, 0.05 / 6.0);
    expect_near("left pow", q.pow_s, std::pow(std::sin(0.5), 2));
  }
  {
    const auto q = ifm::string_query(3.0, toy);  // middle, z = L / 2
    expect_near("middle s", q.s, 2.0);
    expect_near("middle kappa", q.kappa, 0.0);
    expect_true("L/2 offsets from quark", !q.from_antiquark);
    expect_near("middle pow", q.pow_s, 1.0);
  }
  {
    const double z = toy.d;  // exactly d: straight part
    const auto q = ifm::string_query(z, toy);
    expect_near("z = d s", q.s, 2.0);
    expect_near("z = d kappa", q.kappa, 0.0);
  }
  {
    const double z = 6.0 - toy.d;  // exactly L - d: straight part
    const auto q = ifm::string_query(z, toy);
    expect_near("z = L-d s", q.s, 2.0);
    expect_near("z = L-d kappa", q.kappa, 0.0);
  }
  {
    const double z = 5.95;  // right end
    const auto q = ifm::string_query(z, toy);
    expect_near("right s (sin form)", q.s, 2.0 * std::sin(10.0 * (6.0 - z)), 1e-12);
    expect_near("right s (authors' cos form)", q.s, 2.0 * std::cos(10.0 * (z - 6.0 + toy.d)), 1e-9);
    expect_near("right kappa", q.kappa, 10.0 * std::tan(pi - 10.0 * (z - 6.0 + toy.d)), 1e-9);
    expect_true("right kappa negative", q.kappa < 0.0);
    expect_true("right offsets from antiquark", q.from_antiquark);
    expect_near("right t", q.t, -(6.0 - z) / 6.0);
  }
  {
    // K = pi / L: s = sigma0 sin(pi z / L) over the whole gap, and z = L/2 = d is the middle.
    const auto q = ifm::string_query(10.0, wide);
    expect_near("K = pi/L, z = d = L/2: s", q.s, 1.0);
    expect_near("K = pi/L, z = d = L/2: kappa", q.kappa, 0.0);
    const auto q2 = ifm::string_query(7.0, wide);
    expect_near("K = pi/L: s", q2.s, std::sin(pi * 7.0 / 20.0));
  }
  // Queries outside [0, L] and on the plates.
  {
    const auto below = ifm::string_query(-0.1, toy);
    const auto above = ifm::string_query(6.1, toy);
    expect_true("z < 0 outside", !below.inside);
    expect_true("z > L outside", !above.inside);
    expect_true("z < 0 pair is zero", std::isinf(ifm::string_pair(below, 0.0).logw));
    expect_true("z > L pair is zero", std::isinf(ifm::string_pair(above, 0.0).logw));
    const auto on0 = ifm::string_query(0.0, toy);
    const auto onL = ifm::string_query(6.0, toy);
    expect_near("z = 0: s", on0.s, 0.0);
    expect_near("z = L: s", onL.s, 0.0);
    expect_true("z = L: kappa = -inf", std::isinf(onL.kappa) && onL.kappa < 0);
    // the pair's own end point: r = 0 -> exp(0) = 1, cos = 1, den = 1e-2 (+0 since s = 0)
    for (const auto& q : {on0, onL}) {
      const auto pr = ifm::string_pair(q, 0.0);
      expect_near("plate, r = 0: logw", pr.logw, -std::log(1e-2));
      expect_near("plate, r = 0: cos", pr.cos_a, 1.0);
      expect_near("plate, r = 0: sr", pr.sr, 0.0);
      const auto far = ifm::string_pair(q, 1e-6);
      expect_true("plate, r > 0: zero weight", std::isinf(far.logw) && far.logw < 0);
      expect_true("plate, r > 0: finite coefficients",
                  std::isfinite(far.cos_a) && std::isfinite(far.sr));
    }
  }
  // Pair weight against the formula.
  {
    const auto q = ifm::string_query(0.05, toy);
    const double r2 = 0.3;
    const auto pr = ifm::string_pair(q, r2);
    const double r = std::sqrt(r2), s = q.s, kappa = q.kappa;
    const double cos_a = 1.0 / std::sqrt(1.0 + r * r * kappa * kappa);
    const double sin_a = r * kappa * cos_a;
    const double w = std::exp(-r2 / (2 * s * s)) / ((cos_a + 1e-8) * std::pow(s / 2.0, 2) + 1e-2);
    expect_near("pair cos", pr.cos_a, cos_a);
    expect_near("pair sr", pr.sr, sin_a / (r + 1e-11));
    expect_near("pair weight", std::exp(pr.logw), w, 1e-12);
    const auto pr0 = ifm::string_pair(q, 0.0);
    expect_near("r = 0: sr", pr0.sr, 0.0);
    expect_near("r = 0: cos", pr0.cos_a, 1.0);
    // middle: alpha = 0
    const auto qm = ifm::string_query(3.0, toy);
    const auto pm = ifm::string_pair(qm, 0.5);
    expect_near("middle cos", pm.cos_a, 1.0);
    expect_near("middle sr", pm.sr, 0.0);
    expect_near("middle weight", std::exp(pm.logw),
                std::exp(-0.5 / 8.0) / ((1.0 + 1e-8) * 1.0 + 1e-2), 1e-12);
  }
  // Underflow: (s / sigma0)^D is 0 at image D near the plates; the 1e-2 term remains.
  {
    const auto q = ifm::string_query(1e-3, wide);
    expect_near("pow underflows", q.pow_s, 0.0);
    expect_near("self pair weight ~ 1/1e-2", ifm::string_pair(q, 0.0).logw, -std::log(1e-2));
  }
  // Coulomb log-weight and normalisation.
  expect_near("coulomb logit", ifm::coulomb_logit(4.0, 3), -3.0 * std::log(2.0 + 1e-7));
  expect_true("coulomb logit at d = 0 finite", std::isfinite(ifm::coulomb_logit(0.0, 3073)));
  expect_near("normalize factor", ifm::normalize_factor(9.0, 2.0, 1e-5), 2.0 / (3.0 + 1e-5));
  expect_near("normalize factor of a zero row, eps = 0", ifm::normalize_factor(0.0, 2.0, 0.0), 0.0);

  if (failures == 0) std::printf("test_field_math: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
