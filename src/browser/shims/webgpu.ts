/** The `webgpu` package in a browser worker: the browser's own WebGPU (`navigator.gpu`); its globals are already there. */
export const create = (_flags: string[]): GPU => {
  if (!navigator.gpu) throw new Error('this browser offers no WebGPU (navigator.gpu is missing)');
  return navigator.gpu;
};
export const globals = {};

export default { create, globals };
