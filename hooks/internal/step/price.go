package step

import "strings"

// statePrices is each projected matrix's optimizer state (StatePrice), by variable path, from
// the state the step built: the base optimizer keeps, for the coefficients, the moments it
// would keep for the weight.
func (st *stepState) statePrices(hs []handler) map[string]StatePrice {
	prices := make(map[string]StatePrice, len(hs))
	for _, h := range hs {
		m, ok := h.(*matrixVar)
		if !ok {
			continue
		}
		state := st.coefficientState(m)
		if m.stack != nil { // its slot of the stack's state
			state = append(state, st.stackStateInGraph(m.stack)...)
		}
		moments := 0
		for _, sv := range state {
			if !strings.HasSuffix(sv.Name(), SvPrevGrad.Name) && !strings.HasSuffix(sv.Name(), SvPrevStep.Name) {
				moments++ // the curvature signal's history is the projector's, not the base's
			}
		}
		coefBytes := int64(m.coefShape.Memory())
		prices[m.v.Path()] = StatePrice{
			Stock:     int64(moments) * int64(m.v.Shape().Memory()),
			Projected: int64(m.basis.Shape().Memory()) + coefBytes*int64(1+len(state)),
		}
	}
	return prices
}
