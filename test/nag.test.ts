import { Aspects } from 'aws-cdk-lib';
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { buildIntegStack, newExampleApp } from '../integ/app';

describe('cdk-nag AwsSolutionsChecks', () => {
  const app = newExampleApp();
  const stack = buildIntegStack(app);
  Aspects.of(stack).add(new AwsSolutionsChecks({ verbose: true }));
  const annotations = Annotations.fromStack(stack);

  test('example stack has no errors', () => {
    const errors = annotations.findError('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    expect(errors.map((error) => `${error.id}: ${error.entry.data}`)).toEqual([]);
  });

  test('example stack has no warnings', () => {
    const warnings = annotations.findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    expect(warnings.map((warning) => `${warning.id}: ${warning.entry.data}`)).toEqual([]);
  });
});
