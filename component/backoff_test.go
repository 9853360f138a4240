package component

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	const s = time.Second
	for _, tc := range []struct {
		name     string
		min, max time.Duration
		rand     float64
		want     []time.Duration
	}{
		{"no jitter doubles up to the cap", s, 8 * s, 0, []time.Duration{s, 2 * s, 4 * s, 8 * s, 8 * s, 8 * s}},
		{"cap not a power of two", s, 5 * s, 0, []time.Duration{s, 2 * s, 4 * s, 5 * s, 5 * s}},
		{"min equals max", 3 * s, 3 * s, 0, []time.Duration{3 * s, 3 * s}},
		{"half jitter removes 10 %", s, 4 * s, 0.5, []time.Duration{900 * time.Millisecond, 1800 * time.Millisecond, 3600 * time.Millisecond, 3600 * time.Millisecond}},
		{"full jitter removes 20 %", 10 * s, 10 * s, 1, []time.Duration{8 * s}},
		{"rand above 1 is clamped", 10 * s, 10 * s, 7, []time.Duration{8 * s}},
		{"negative rand is clamped", s, s, -3, []time.Duration{s}},
		{"NaN rand is clamped", s, s, math.NaN(), []time.Duration{s}},
		{"huge cap does not overflow", time.Duration(math.MaxInt64 / 3), time.Duration(math.MaxInt64), 0,
			[]time.Duration{time.Duration(math.MaxInt64 / 3), time.Duration(math.MaxInt64/3) * 2, time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := backoff{min: tc.min, max: tc.max, rand: func() float64 { return tc.rand }}
			var got []time.Duration
			for range tc.want {
				got = append(got, b.Next())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Next() sequence = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBackoffReset(t *testing.T) {
	b := backoff{min: time.Second, max: time.Minute, rand: func() float64 { return 0 }}
	b.Next()
	b.Next()
	if got := b.Next(); got != 4*time.Second {
		t.Fatalf("third Next() = %v, want 4s", got)
	}
	b.Reset()
	if got := b.Next(); got != time.Second {
		t.Errorf("Next() after Reset = %v, want 1s", got)
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	// Whatever rand returns, a wait stays within (0.8·nominal, nominal].
	r := 0.0
	b := backoff{min: 100 * time.Millisecond, max: 10 * time.Second, rand: func() float64 { r += 0.37; return r - math.Floor(r) }}
	nominal := 100 * time.Millisecond
	for i := range 20 {
		got := b.Next()
		if got > nominal || float64(got) <= 0.8*float64(nominal) {
			t.Errorf("wait %d = %v, want in (%v, %v]", i, got, time.Duration(0.8*float64(nominal)), nominal)
		}
		nominal = min(2*nominal, 10*time.Second)
	}
}
