/**
 * `webtron train`'s schedule flags, checked as Megatron-LM's validate_args checks them: a run is
 * iteration-based (--train-iters, --lr-decay-iters, --lr-warmup-iters, --lr-wsd-decay-iters) or
 * sample-based (--train-samples and the -samples flags), never both; --lr-warmup-fraction replaces
 * either warmup; WSD needs its final decay's length; a weight decay that changes needs both ends.
 */
import { FlagError, flagReader, type FlagSpec, type FlagValues } from './flags.js';
import { DECAY_STYLES, type ScheduleFlags, WEIGHT_DECAY_INCR_STYLES, WSD_DECAY_STYLES } from '../train/schedule.js';

/** The other unit's flag for each unit's: what an iteration-based run must not give, and the other way round. */
const BY_ITERS = ['lr-decay-iters', 'lr-warmup-iters', 'lr-wsd-decay-iters'];
const BY_SAMPLES = ['lr-decay-samples', 'lr-warmup-samples', 'lr-wsd-decay-samples'];

/**
 * The schedule fields of a run whose global batch is `globalBatchSize`; `specs`: webtron train's
 * flags; `batches`: a batch-size schedule's first batch and its count of iterations for --train-samples.
 */
export function scheduleFlags(
  v: FlagValues,
  globalBatchSize: number,
  specs: Record<string, FlagSpec>,
  batches: { first: number; iterations: (trainSamples: number) => number } | null = null,
): ScheduleFlags {
  const { int, optionalInt, num, nonNegative, choice } = flagReader(v, specs);
  const given = (name: string) => v[name] !== undefined && v[name] !== specs[name]!.default;
  if (v['train-iters'] !== undefined && v['train-samples'] !== undefined)
    throw new FlagError('--train-iters and --train-samples exclude each other: train by iterations or by samples, not both');
  const bySamples = v['train-samples'] !== undefined;
  const [unit, other] = bySamples ? ['samples', 'iters'] : ['iters', 'samples'];
  for (const name of bySamples ? BY_ITERS : BY_SAMPLES) {
    if (given(name))
      throw new FlagError(`--${name} goes with --train-${other}; this run gives --train-${unit}: use --${name.replace(other, unit)}`);
  }
  const trainSamples = bySamples ? int('train-samples', 1) : null;
  const firstBatch = batches?.first ?? globalBatchSize;
  if (trainSamples !== null && trainSamples < firstBatch)
    throw new FlagError(`--train-samples ${trainSamples} is less than one global batch (${firstBatch} samples)`);
  const trainIters =
    trainSamples === null ? int('train-iters', 1) : (batches?.iterations(trainSamples) ?? Math.floor(trainSamples / globalBatchSize));

  const lrDecayStyle = choice('lr-decay-style', DECAY_STYLES);
  const lr = nonNegative('lr');
  const minLr = nonNegative('min-lr');
  if (minLr > lr) throw new FlagError(`--min-lr ${minLr} must not exceed --lr ${lr}`);
  const { decoupledLr, decoupledMinLr } = decoupledRates(v, specs, minLr);
  const decay = bySamples ? (optionalInt('lr-decay-samples', 1) ?? trainSamples!) : (optionalInt('lr-decay-iters', 1) ?? trainIters);
  const warmupName = `lr-warmup-${unit}`;
  const lrWarmupFraction = v['lr-warmup-fraction'] === undefined ? null : num('lr-warmup-fraction', (x) => x >= 0 && x < 1, 'in [0, 1)');
  if (lrWarmupFraction !== null && given(warmupName))
    throw new FlagError(`--lr-warmup-fraction and --${warmupName} exclude each other: give one warmup`);
  const warmup = int(warmupName, 0);
  if (lrDecayStyle !== 'constant' && lrWarmupFraction === null && warmup >= decay)
    throw new FlagError(`--${warmupName} ${warmup} must be below --lr-decay-${unit} ${decay}`);
  const wsdName = `lr-wsd-decay-${unit}`;
  const wsd = optionalInt(wsdName, 1);
  if (lrDecayStyle === 'WSD' && wsd === null) throw new FlagError(`--lr-decay-style WSD needs --${wsdName} (how long the final decay is)`);
  if (wsd !== null && wsd > decay) throw new FlagError(`--${wsdName} ${wsd} must not exceed --lr-decay-${unit} ${decay}`);

  const weightDecayIncrStyle = choice('weight-decay-incr-style', WEIGHT_DECAY_INCR_STYLES);
  const weightDecay = nonNegative('weight-decay');
  let [startWeightDecay, endWeightDecay] = [weightDecay, weightDecay];
  if (weightDecayIncrStyle === 'constant') {
    for (const name of ['start-weight-decay', 'end-weight-decay'])
      if (v[name] !== undefined)
        throw new FlagError(`--${name} needs --weight-decay-incr-style linear or cosine (constant keeps --weight-decay)`);
  } else {
    [startWeightDecay, endWeightDecay] = [nonNegative('start-weight-decay'), nonNegative('end-weight-decay')];
    if (endWeightDecay < startWeightDecay)
      throw new FlagError(`--end-weight-decay ${endWeightDecay} must be at least --start-weight-decay ${startWeightDecay}`);
  }
  return {
    trainIters,
    trainSamples,
    lr,
    minLr,
    decoupledLr,
    decoupledMinLr,
    lrDecayStyle,
    lrDecayIters: bySamples ? null : decay,
    lrWarmupIters: bySamples ? 0 : warmup,
    lrDecaySamples: bySamples ? decay : null,
    lrWarmupSamples: bySamples ? warmup : 0,
    lrWarmupFraction,
    lrWarmupInit: nonNegative('lr-warmup-init'),
    lrWsdDecayStyle: choice('lr-wsd-decay-style', WSD_DECAY_STYLES),
    lrWsdDecayIters: bySamples ? null : wsd,
    lrWsdDecaySamples: bySamples ? wsd : null,
    weightDecay,
    startWeightDecay,
    endWeightDecay,
    weightDecayIncrStyle,
  };
}

/**
 * --decoupled-lr and --decoupled-min-lr: the embedding's and the output layer's own peak and
 * minimum rates. The minimum needs the peak (alone it would change nothing), and neither end may
 * make their rate rise as it decays.
 */
function decoupledRates(
  v: FlagValues,
  specs: Record<string, FlagSpec>,
  minLr: number,
): { decoupledLr: number | null; decoupledMinLr: number | null } {
  const { nonNegative } = flagReader(v, specs);
  const decoupledLr = v['decoupled-lr'] === undefined ? null : nonNegative('decoupled-lr');
  const decoupledMinLr = v['decoupled-min-lr'] === undefined ? null : nonNegative('decoupled-min-lr');
  if (decoupledLr === null) {
    if (decoupledMinLr !== null)
      throw new FlagError(
        "--decoupled-min-lr needs --decoupled-lr: it is the minimum of the embedding's and output layer's own rate; give --decoupled-lr too, or leave it out",
      );
    return { decoupledLr, decoupledMinLr };
  }
  const [min, minName] = decoupledMinLr === null ? [minLr, '--min-lr'] : [decoupledMinLr, '--decoupled-min-lr'];
  if (min > decoupledLr)
    throw new FlagError(
      `${minName} ${min} must not exceed --decoupled-lr ${decoupledLr}: the embedding's and output layer's rate decays to it${decoupledMinLr === null ? '; give --decoupled-min-lr' : ''}`,
    );
  return { decoupledLr, decoupledMinLr };
}
