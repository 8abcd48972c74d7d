// 1-D kernels over any length: the host lays workgroups out on a 2-D grid past 65535 of them
// (src/gpu/grid.ts), and each invocation's flat index is recovered here.

override WG: u32 = 256;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.x + wid.y * nwg.x) * WG + lid;
}
