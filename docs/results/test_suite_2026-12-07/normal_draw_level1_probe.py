import time, jax, jax.numpy as jnp, numpy as np
shapes=[(3,3,1,4),(3,3,1,8),(3,3,8,8),(3,3,8,16),(3,3,16,16),(3,3,16,32),(3,3,32,32),(512,64),(64,10),(32,10),(1,1,8,16),(3,3,64,64),(3,3,128,256),(8192,1024),(1024,10)]
ok=True; t_def=t_l1=0
for i,shape in enumerate(shapes):
    key=jax.random.fold_in(jax.random.key(7), i)
    t=time.time(); a=np.asarray(jax.random.normal(key, shape, jnp.float32)); t_def+=time.time()-t
    f=jax.jit(lambda k, shape=shape: jax.random.normal(k, shape, jnp.float32), compiler_options={"xla_backend_optimization_level": 1})
    t=time.time(); b=np.asarray(f(key)); t_l1+=time.time()-t
    same=np.array_equal(a,b); ok&=same
    if not same: print(shape, "DIFF", int((a!=b).sum()))
print("all equal", ok, "default %.1f s level1 %.1f s"%(t_def,t_l1))
