package array

import (
	"fmt"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/idset"
)

// Policy is a parsed success policy (batch/v1 successPolicy): the array
// succeeds as soon as one rule is met.
type Policy struct {
	rules []rule
}

type rule struct {
	positions []int // of the rule's indexes that are in the array; nil: all
	all       bool
	count     int // 0: every one of positions
}

// ParsePolicy reads p for the array set; nil p is no policy.
func ParsePolicy(p *fluxjobv1.ArraySuccessPolicy, set idset.Set) (*Policy, error) {
	if p == nil {
		return nil, nil
	}
	out := &Policy{}
	for i, r := range p.Rules {
		var x rule
		if r.SucceededCount != nil {
			x.count = int(*r.SucceededCount)
		}
		if r.SucceededIndexes == "" {
			x.all = true
		} else {
			s, err := idset.Parse(r.SucceededIndexes, fluxjobv1.MaxArrayIndexes)
			if err != nil {
				return nil, fmt.Errorf("spec.array.successPolicy.rules[%d].succeededIndexes: %w", i, err)
			}
			for _, rg := range s.Ranges() {
				for id := uint64(rg.Lo); id <= uint64(rg.Hi); id++ {
					if pos, ok := set.Pos(uint32(id)); ok {
						x.positions = append(x.positions, pos)
					}
				}
			}
		}
		out.rules = append(out.rules, x)
	}
	return out, nil
}

// Met reports whether a rule is met, given the succeeded positions and
// their number.
func (p *Policy) Met(succeeded idset.Bits, n int) bool {
	if p == nil {
		return false
	}
	for _, r := range p.rules {
		if r.all {
			if r.count > 0 && n >= r.count {
				return true
			}
			continue
		}
		k := 0
		for _, pos := range r.positions {
			if succeeded.Has(pos) {
				k++
			}
		}
		need := r.count
		if need == 0 {
			need = len(r.positions)
		}
		if need > 0 && k >= need {
			return true
		}
	}
	return false
}
