package direct

import (
	"fmt"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gradsub/gradsub/internal/upstream"
)

// View is how the post-hoc path sees a weight of any rank as a matrix [m, n].
type View struct {
	M, N  int
	FromW func(w *Node) *Node // W (or its gradient) → [m, n]
	ToW   func(w2 *Node) *Node
	Desc  string // for the plan
}

// ViewOf matricizes a weight by how it is used: a convolution's kernel as [spatial·in, out]
// (whatever its layout or grouping), a product's weight as its contracted axes against the
// rest, anything else as [dimension 0, the rest], which the plan then states.
func ViewOf(g *Graph, w *Node) *View {
	for _, c := range g.Nodes()[w.Id()+1:] {
		if len(c.Inputs()) < 2 || c.Inputs()[1] != w && c.Inputs()[0] != w {
			continue
		}
		var p *Product
		switch c.Type() {
		case NodeTypeConvGeneral:
			if c.Inputs()[1] == w {
				if conv := newConvInfo(c, w.Shape().Dimensions, upstream.ConvGeneralParams(c)); conv != nil {
					out := w.Shape().Dim(conv.kernelOut)
					return &View{M: w.Shape().Size() / out, N: out, FromW: conv.matrix, ToW: conv.kernelOf,
						Desc: fmt.Sprintf("a convolution kernel [%d×%d] (spatial·in × out)", w.Shape().Size()/out, out)}
				}
			}
		case NodeTypeDotGeneral:
			p, _ = dotGeneralProduct(c, w)
		case NodeTypeFusedDense:
			p, _ = fusedDenseProduct(c, w)
		}
		if p != nil {
			return &View{M: p.M, N: p.N, FromW: p.FromW, ToW: p.ToW,
				Desc: fmt.Sprintf("a [%d×%d] matrix (contracted axes × the rest)", p.M, p.N)}
		}
	}
	dims := w.Shape().Dimensions
	m := dims[0]
	n := w.Shape().Size() / m
	return &View{M: m, N: n,
		FromW: func(w *Node) *Node { return Reshape(w, m, n) },
		ToW:   func(w2 *Node) *Node { return Reshape(w2, dims...) },
		Desc:  fmt.Sprintf("[%d×%d] (dimension 0 × the rest)", m, n)}
}
