package component

import "time"

// jitterFraction is the largest share of a nominal wait that jitter removes.
const jitterFraction = 0.2

// backoff computes the waits between reconnect attempts: capped exponential
// backoff with jitter. The nominal wait starts at min, doubles on every Next
// and stops growing at max; each returned wait is the nominal one shortened
// by rand()·20 %, so it lies in (0.8·nominal, nominal] and never exceeds max.
// Reset starts over at min. A backoff is not safe for concurrent use.
type backoff struct {
	min, max time.Duration
	// rand returns a number in [0, 1); values outside are clamped.
	rand func() float64
	// nominal is the nominal wait of the next call to Next; 0 means min.
	nominal time.Duration
}

// Next returns the wait before the next attempt and advances the sequence.
func (b *backoff) Next() time.Duration {
	d := max(b.nominal, b.min)
	d = min(d, b.max)
	if d > b.max/2 {
		b.nominal = b.max
	} else {
		b.nominal = 2 * d
	}
	r := b.rand()
	if !(r > 0) { // also catches NaN
		r = 0
	}
	if r > 1 {
		r = 1
	}
	return d - time.Duration(r*jitterFraction*float64(d))
}

// Reset makes the next wait the minimum again.
func (b *backoff) Reset() { b.nominal = 0 }
