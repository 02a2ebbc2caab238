import time, sys, jax, jax.numpy as jnp, numpy as np
from neft_jax.models import create_model
mode=sys.argv[1]; name=sys.argv[2]; width=float(sys.argv[3])
model=create_model(name, 10, exits=True, width=width)
x=jnp.zeros((1,32,32,1),jnp.float32)
t=time.time()
if mode=="eager":
    v=model.init(jax.random.key(0), x, train=False)
else:
    v=jax.jit(lambda k,x: model.init(k,x,train=False))(jax.random.key(0), x)
jax.block_until_ready(v)
print(mode, name, width, "%.2f s"%(time.time()-t))
np.savez(f"/tmp/init_{mode}_{name}.npz", *[np.asarray(l) for l in jax.tree.leaves(v)])
