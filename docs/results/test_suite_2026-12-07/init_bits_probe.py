import time, sys, jax, jax.numpy as jnp, numpy as np
from neft_jax.models import create_model
name=sys.argv[1]; width=float(sys.argv[2])
model=create_model(name, 10, exits=True, width=width)
t=time.time()
v=model.init(jax.random.key(0), jnp.zeros((1,32,32,1),jnp.float32), train=False)
jax.block_until_ready(v); print(name, "eager init %.2f s"%(time.time()-t))
a=np.load(f"/tmp/init_eager_{name}.npz"); leaves=[np.asarray(l) for l in jax.tree.leaves(v)]
print("bit-identical to before:", len(a.files)==len(leaves) and all(np.array_equal(a[f"arr_{i}"], l) for i,l in enumerate(leaves)))
