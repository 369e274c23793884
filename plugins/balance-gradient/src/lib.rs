//! Gradient balancers (work in progress): PCGrad, MGDA, IMTL-G, CAGrad, Nash-MTL, Aligned-MTL.
