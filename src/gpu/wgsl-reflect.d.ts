// wgsl_reflect's Node entry (wgsl_reflect.node.js) exports nothing to ES modules; its ES module build
// carries the same API as its declared types.
declare module 'wgsl_reflect/wgsl_reflect.module.js' {
  export * from 'wgsl_reflect';
}
